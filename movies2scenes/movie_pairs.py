"""What the movie encoder trains and is scored on (paper §3.2): positive movie pairs split into
training and held-out sets, random negatives, windows of standardised shot features
(:class:`FeatureBank`), and the held-out ROC-AUC of a model's pair scores."""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError
from .features import ShotFeatures
from .metrics import roc_auc
from .models.movie import pad_or_crop
from .progress import progress


def random_pairs(movies: list[str], n: int, avoid: set[tuple[str, str]], rng,
                 reject=None) -> list[tuple[str, str]]:
    """``n`` random movie pairs outside ``avoid`` and not ``reject(a, b)`` (drawn with replacement)."""
    out: list[tuple[str, str]] = []
    if len(movies) < 2:
        return out
    tries = 0
    while len(out) < n and tries < 100 * n + 100:
        a, b = rng.choice(len(movies), 2, replace=False)
        key = tuple(sorted((movies[a], movies[b])))
        tries += 1
        if key not in avoid and not (reject and reject(*key)):
            out.append(key)
    return out


def genre_disjoint_heldout(heldout, movies, positives_set, genres: dict[str, set[str]], seed: int):
    """The held-out positives against a second negative set: random pairs outside S that share no
    genre (a 'random pair' of the same genre is, by the genre source's own definition, similar)."""
    pos = [(a, b, y) for a, b, y in heldout if y == 1.0]
    rng = np.random.default_rng([seed, 44])
    negs = random_pairs(movies, len(pos), positives_set, rng,
                        reject=lambda a, b: bool(genres.get(a, set()) & genres.get(b, set())))
    return pos + [(a, b, 0.0) for a, b in negs] if negs else []


def split_pairs(positives: list[tuple[str, str]], movies: list[str], heldout_fraction: float, seed: int):
    """(train positives, held-out pairs with labels): fixed for a given seed."""
    rng = np.random.default_rng([seed, 41])
    order = rng.permutation(len(positives))
    n_held = max(1, int(round(heldout_fraction * len(positives))))
    held_pos = [positives[i] for i in order[:n_held]]
    train_pos = [positives[i] for i in order[n_held:]]
    held_neg = random_pairs(movies, len(held_pos), set(positives), rng)
    return train_pos, [(a, b, 1.0) for a, b in held_pos] + [(a, b, 0.0) for a, b in held_neg]


def epoch_pairs(train_pos, movies, positives_set, epoch: int, seed: int):
    rng = np.random.default_rng([seed, 42, epoch])
    negs = random_pairs(movies, len(train_pos), positives_set, rng)
    items = [(a, b, 1.0) for a, b in train_pos] + [(a, b, 0.0) for a, b in negs]
    return [items[i] for i in rng.permutation(len(items))]


class FeatureBank:
    """Standardised shot features of the movies, read window by window from the memory-mapped
    fp16 arrays: a batch reads only the ``length`` rows it uses, so memory does not grow with the
    number of movies or their length (a 10⁴-title catalogue of 2,000-shot films is ~8 GB of fp16).

    Standardisation statistics (per feature, over every shot of the training movies) are
    accumulated movie by movie in float64 (Chan's pairwise update of mean and M2): frozen ViT
    features share a large common component that would otherwise dominate A = E(x1)·E(x2)ᵀ."""

    def __init__(self, feats: ShotFeatures, length: int, movies: list[str] | None = None):
        self.feats, self.length = feats, length
        train = set(movies or feats.movie_ids)
        count, mean, m2 = 0, np.zeros(feats.dim), np.zeros(feats.dim)
        for m in progress(feats.movie_ids, desc="feature statistics", unit="movie"):
            x = np.asarray(feats.movie(m), dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(x).all(1))
            if len(bad):  # would surface as a NaN loss ("lower the learning rate"): name it instead
                raise ConfigError(f"{feats.dir / feats.rows[m]['file']}: movie {m!r} has non-finite shot "
                                  f"features at shot(s) {', '.join(map(str, bad[:10].tolist()))}"
                                  f"{' ...' if len(bad) > 10 else ''} ({len(bad)} of {len(x)}); check those "
                                  "shots' keyframes and rerun extract-shot-features --force")
            if m not in train or not len(x):
                continue
            n, mu = len(x), x.mean(0)
            delta = mu - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + ((x - mu) ** 2).sum(0) + delta ** 2 * (count * n / total)
            count = total
        self.mean = mean.astype(np.float32)
        self.std = (np.sqrt(m2 / max(count, 1)) + 1e-6).astype(np.float32)

    def window(self, movie: str, offset: int) -> torch.Tensor:
        """Rows ``offset:offset + length`` of the movie, standardised, float32."""
        x = np.asarray(self.feats.movie(movie)[offset:offset + self.length], dtype=np.float32)
        return torch.from_numpy((x - self.mean) / self.std)

    def batch(self, movies: list[str], rng: np.random.Generator | None):
        xs, ms = [], []
        for m in movies:
            extra = self.feats.num_shots(m) - self.length
            offset = (int(rng.integers(extra + 1)) if rng is not None else extra // 2) if extra > 0 else 0
            padded, mask = pad_or_crop(self.window(m, offset), self.length)
            xs.append(padded)
            ms.append(mask)
        return torch.stack(xs), torch.stack(ms)


def eval_sample(pairs: list[tuple[str, str, float]], k: int, seed: int) -> list[tuple[str, str, float]]:
    """At most ``k`` of the labelled pairs, half positives and half negatives where there are
    enough of each (seeded, original order kept); ``k`` = 0: all."""
    if not k or len(pairs) <= k:
        return pairs
    rng = np.random.default_rng([seed, 45])
    pos = [i for i, p in enumerate(pairs) if p[2] == 1.0]
    neg = [i for i, p in enumerate(pairs) if p[2] != 1.0]
    n_pos = min(len(pos), max(k // 2, k - len(neg)))
    keep = set(rng.choice(pos, n_pos, replace=False).tolist()) | set(rng.choice(neg, min(len(neg), k - n_pos), replace=False).tolist())
    return [p for i, p in enumerate(pairs) if i in keep]


@torch.no_grad()
def heldout_metrics(model, bank: FeatureBank, pairs, device, batch: int = 64, desc: str = "held-out AUC") -> dict:
    """ROC-AUC and accuracy (logit > 0) of the model's scores of labelled movie pairs."""
    model.eval()
    scores = []
    bar = progress(total=len(pairs), desc=desc, unit="pair")
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        x1, m1 = bank.batch([a for a, _, _ in chunk], None)
        x2, m2 = bank.batch([b for _, b, _ in chunk], None)
        scores.append(model(x1.to(device), m1.to(device), x2.to(device), m2.to(device)).float().cpu())
        bar.update(len(chunk))
    bar.close()
    model.train()
    s = torch.cat(scores).numpy()
    y = np.array([label for _, _, label in pairs])
    return {"auc": roc_auc(s, y), "accuracy": float(((s > 0) == (y > 0.5)).mean()),
            "pairs": len(pairs)}

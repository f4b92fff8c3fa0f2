"""Training data from the shot shards: deterministic, resumable streams of (t−2, t, t+2) triplets.

An epoch's *recipe* — which shots are queries and in which order — is computed from
``shots/index.parquet`` alone (no image I/O), seeded by (seed, epoch): movies in a random order,
``query_fraction`` of each movie's shots (those with at least one neighbour) as queries, shuffled
within windows of ``shuffle_movies`` movies. Images are then read by streaming each movie's shard
once per window. Resuming at step s skips the first s global batches of the recipe, so a resumed
run sees exactly the data an uninterrupted one would. Augmentations are seeded per sample, so the
number of loader workers changes nothing either.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from timm.data import IMAGENET_DEFAULT_MEAN as MEAN
from timm.data import IMAGENET_DEFAULT_STD as STD
from torch.utils.data import IterableDataset, get_worker_info

from .config import AugmentConfig
from .integrity import verified
from .store import decode_keyframes, iter_tar


@dataclass(frozen=True)
class Triplet:
    shard: str
    query: str  # webdataset keys
    minus: str | None
    plus: str | None


def movie_shots(shots_dir: str | Path) -> dict[str, list[tuple[str, str]]]:
    """shard → [(key, movie_id)] in shot order, for every movie of the shots stage."""
    table = pq.read_table(verified(Path(shots_dir) / "index.parquet"), columns=["shard", "key", "shot", "movie_id"])
    out: dict[str, list] = defaultdict(list)
    columns = (table[c].to_pylist() for c in ("shard", "shot", "key", "movie_id"))
    for shard, _shot, key, movie in sorted(zip(*columns)):
        out[shard].append((key, movie))
    return dict(out)


def shard_digests(shots_dir: str | Path) -> dict[str, tuple[str, str]]:
    """movie_id → (shot shard, its sha256), sorted by movie id, from the shots stage's index."""
    table = pq.read_table(verified(Path(shots_dir) / "index.parquet"), columns=["movie_id", "shard", "shard_sha256"])
    rows = zip(*(table[c].to_pylist() for c in ("movie_id", "shard", "shard_sha256")))
    return dict(sorted({m: (s, d) for m, s, d in rows}.items()))


def epoch_triplets(movies: dict[str, list], epoch: int, seed: int, query_fraction: float,
                   offset: int = 2, shuffle_movies: int = 16) -> list[Triplet]:
    """The epoch's queries in training order (see module doc)."""
    rng = np.random.default_rng([seed, epoch])
    shards = sorted(movies)
    order = [shards[i] for i in rng.permutation(len(shards))]
    out: list[Triplet] = []
    for w in range(0, len(order), shuffle_movies):
        window: list[Triplet] = []
        for shard in order[w:w + shuffle_movies]:
            keys = [k for k, _ in movies[shard]]
            m = len(keys)
            candidates = [t for t in range(m) if t - offset >= 0 or t + offset < m]
            if not candidates:
                continue  # movies too short to have any neighbour pair
            n = max(1, int(round(query_fraction * len(candidates))))
            for t in sorted(rng.choice(candidates, size=n, replace=False)):
                window.append(Triplet(shard, keys[t], keys[t - offset] if t - offset >= 0 else None,
                                      keys[t + offset] if t + offset < m else None))
        out += [window[i] for i in rng.permutation(len(window))]
    return out


def train_transform(size: int, aug: AugmentConfig):
    from torchvision.transforms import v2

    j = aug.color_jitter
    steps = [v2.RandomResizedCrop(size, scale=tuple(aug.crop_scale), antialias=True)]
    if aug.flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(aug.flip_prob))
    if j > 0 and aug.color_jitter_prob > 0:
        steps.append(v2.RandomApply([v2.ColorJitter(j, j, j, j / 4)], p=aug.color_jitter_prob))
    if aug.grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(aug.grayscale_prob))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(steps)


def eval_transform(size: int):
    """Short side to ``size``, centre crop, normalise: the deterministic view used for features."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def loader_workers(wanted: int) -> int:
    """``num_workers`` capped by the CPUs this process may use (torch's DataLoader warns above
    that, and more processes than cores only contend). Results do not depend on it."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(wanted, cpus))


def to_chw(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)


class ShardCache:
    """The last few shards, fully read (each shard is read start to end, never seeked)."""

    def __init__(self, shots_dir: Path, size: int):
        self.dir, self.size = Path(shots_dir), size
        self.items: OrderedDict[str, dict] = OrderedDict()

    def shard(self, shard: str) -> dict:
        """All samples of a shard, key → sample, in shard order."""
        if shard not in self.items:
            self.items[shard] = {s["__key__"]: s for s in iter_tar(verified(self.dir / shard))}
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        self.items.move_to_end(shard)
        return self.items[shard]

    def sample(self, shard: str, key: str) -> dict:
        return self.shard(shard)[key]


class RecipeStream(IterableDataset):
    """This process's share of an epoch recipe (a list of items), as training samples.

    Global batch b holds items [b·B·W, (b+1)·B·W) of the recipe (B = per-process batch, W =
    processes); this process takes its B-slice, and loader worker w produces batches w, w+n, ...
    which the DataLoader returns round-robin, i.e. in order. Subclasses turn one item into a
    sample with ``make(cache, item, seed)``; ``seed`` = [seed, epoch, position in the recipe].
    """

    def __init__(self, data_dir, items: list, batch_size: int, rank: int, world: int, seed: int,
                 epoch: int, start_batch: int = 0, cache_shards: int = 17):
        self.dir, self.items, self.batch = Path(data_dir), items, batch_size
        self.rank, self.world = rank, world
        self.seed, self.epoch, self.start, self.cache_shards = seed, epoch, start_batch, cache_shards

    def num_batches(self) -> int:
        return len(self.items) // (self.batch * self.world)

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start)

    def make(self, cache: "ShardCache", item, seed: list[int]) -> dict:
        raise NotImplementedError

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        cache = ShardCache(self.dir, self.cache_shards)
        global_batch = self.batch * self.world
        for b in range(self.start + wid, self.num_batches(), nw):
            base = b * global_batch + self.rank * self.batch
            for j, item in enumerate(self.items[base:base + self.batch]):
                yield self.make(cache, item, [self.seed, self.epoch, base + j])


def _seeded(transform, x: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(gen.integers(2**62)))
        return transform(x)


class TripletStream(RecipeStream):
    """Shot MoCo samples: (query, minus, plus) views of a triplet recipe (``epoch_triplets``)."""

    def __init__(self, shots_dir, triplets: list[Triplet], batch_size: int, rank: int, world: int,
                 transform, size: int, seed: int, epoch: int, start_batch: int = 0,
                 cache_movies: int = 17):
        super().__init__(shots_dir, triplets, batch_size, rank, world, seed, epoch, start_batch, cache_movies)
        self.transform, self.size = transform, size

    def _view(self, cache: ShardCache, shard: str, key: str | None, rng_seed: list[int]) -> torch.Tensor:
        if key is None:
            return torch.zeros(3, self.size, self.size)
        frames = decode_keyframes(cache.sample(shard, key))
        gen = np.random.default_rng(rng_seed)
        frame = frames[int(gen.integers(len(frames)))]
        return _seeded(self.transform, to_chw(frame), gen)

    def make(self, cache, t: Triplet, s: list[int]) -> dict:
        return {
            "query": self._view(cache, t.shard, t.query, s + [0]),
            "minus": self._view(cache, t.shard, t.minus, s + [1]),
            "plus": self._view(cache, t.shard, t.plus, s + [2]),
            "has_minus": t.minus is not None,
            "has_plus": t.plus is not None,
        }


# ----------------------------------------------------------------------------------------------
# scene pairs (scene_pairs/scenes-NNNNNN.tar)


@dataclass(frozen=True)
class ScenePairItem:
    shard: str
    key: str
    swap: bool  # True: scene b is the query and scene a its positive


def scene_pair_keys(scene_dir: str | Path) -> dict[str, list[str]]:
    """shard → sample keys in shard order, from ``scene_pairs/pairs.parquet``."""
    table = pq.read_table(verified(Path(scene_dir) / "pairs.parquet"), columns=["shard", "key"])
    out: dict[str, list[str]] = defaultdict(list)
    for shard, key in sorted(zip(table["shard"].to_pylist(), table["key"].to_pylist())):
        out[shard].append(key)
    return dict(out)


def epoch_scene_pairs(shards: dict[str, list[str]], epoch: int, seed: int, shuffle_shards: int = 4,
                      swap_sides: bool = True) -> list[ScenePairItem]:
    """The epoch's scene pairs in training order: shards in a seeded random order, pairs shuffled
    within windows of ``shuffle_shards`` shards, each pair's direction a seeded coin."""
    rng = np.random.default_rng([seed, 1009, epoch])
    names = sorted(shards)
    order = [names[i] for i in rng.permutation(len(names))]
    out: list[ScenePairItem] = []
    for w in range(0, len(order), shuffle_shards):
        window = [(shard, key) for shard in order[w:w + shuffle_shards] for key in shards[shard]]
        swaps = rng.random(len(window)) < 0.5 if swap_sides else np.zeros(len(window), bool)
        out += [ScenePairItem(*window[i], bool(swaps[i])) for i in rng.permutation(len(window))]
    return out


def scene_tensor(frames: np.ndarray) -> torch.Tensor:
    """(n, k, H, W, 3) uint8 → (n·k, 3, H, W) uint8 tensor."""
    n, k, h, w, c = frames.shape
    return torch.from_numpy(np.ascontiguousarray(frames.reshape(n * k, h, w, c))).permute(0, 3, 1, 2)


class ScenePairStream(RecipeStream):
    """Scene MoCo samples: {"query", "key"}, each (n, k, 3, S, S). A scene's augmentation is drawn
    once and applied to all its frames (torchvision v2 treats the leading dimension as a batch
    with shared parameters); query and key get independent draws."""

    def __init__(self, scene_dir, items: list[ScenePairItem], batch_size: int, rank: int, world: int,
                 transform, seed: int, epoch: int, start_batch: int = 0, cache_shards: int = 5):
        super().__init__(scene_dir, items, batch_size, rank, world, seed, epoch, start_batch, cache_shards)
        self.transform = transform

    def make(self, cache, item: ScenePairItem, s: list[int]) -> dict:
        from .store import decode_scene

        sample = cache.sample(item.shard, item.key)
        sides = ("b", "a") if item.swap else ("a", "b")
        out = {}
        for name, side, tag in (("query", sides[0], 0), ("key", sides[1], 1)):
            frames = decode_scene(sample, side)
            x = _seeded(self.transform, scene_tensor(frames), np.random.default_rng(s + [tag]))
            out[name] = x.reshape(frames.shape[0], frames.shape[1], *x.shape[1:])
        return out


# ----------------------------------------------------------------------------------------------
# scene pairs as shot-feature windows (scene_encoder.arch: factorised, frozen backbone)


class FeaturePairBatches:
    """This process's share of an epoch of scene pairs as batches of shot-feature windows:
    {"query", "key"}, each (B, n, d) float32 (with ``context``: (B, context, d + 2), each scene in
    its movie's context), read from ``shot_features/`` (no decoding). The recipe
    (order and direction of every pair) is :func:`epoch_scene_pairs`, the joint encoder's, and global
    batch b is sliced between processes as :class:`RecipeStream` does. A pair's scenes are its rows
    ``start_a`` / ``start_b`` … + n of each movie's feature matrix."""

    def __init__(self, scene_dir: str | Path, features, shots_per_scene: int, context: int = 0):
        table = pq.read_table(verified(Path(scene_dir) / "pairs.parquet"),
                              columns=["shard", "key", "movie_a", "start_a", "movie_b", "start_b"]).to_pylist()
        self.sides = {(r["shard"], r["key"]): ((r["movie_a"], r["start_a"]), (r["movie_b"], r["start_b"]))
                      for r in table}
        self.features, self.n, self.context = features, shots_per_scene, context
        for (shard, key), sides in self.sides.items():
            for movie, start in sides:
                if movie not in features.rows:
                    raise ValueError(f"{Path(scene_dir) / 'pairs.parquet'}: pair {shard}/{key} uses movie {movie!r}, "
                                     f"which has no shot features in {features.dir}")
                if start < 0 or start + self.n > features.num_shots(movie):
                    raise ValueError(f"{Path(scene_dir) / 'pairs.parquet'}: pair {shard}/{key} reads shots "
                                     f"{start}..{start + self.n - 1} of {movie!r}, which has "
                                     f"{features.num_shots(movie)} in {features.dir}")

    def window(self, movie: str, start: int) -> np.ndarray:
        """The scene's (n, d) rows, or with ``context`` its (context, d + 2) window in its movie
        (``models.factorised.context_window``, padded to ``context`` where the movie is shorter)."""
        from .models.factorised import window_rows

        return window_rows(self.features.movie(movie), range(start, start + self.n), self.context, self.context)

    def epoch(self, items: list[ScenePairItem], batch_size: int, rank: int = 0, world: int = 1, start_batch: int = 0):
        """This process's batches ``start_batch``, … (``batch_size`` pairs each) of the epoch whose
        recipe is ``items``."""
        global_batch = batch_size * world
        for b in range(start_batch, len(items) // global_batch):
            base = b * global_batch + rank * batch_size
            out = {"query": [], "key": []}
            for item in items[base:base + batch_size]:
                a, b_side = self.sides[(item.shard, item.key)]
                q, k = (b_side, a) if item.swap else (a, b_side)
                out["query"].append(self.window(*q))
                out["key"].append(self.window(*k))
            yield {name: torch.from_numpy(np.stack(v)) for name, v in out.items()}


class MovieChunks(IterableDataset):
    """Full batches of eval views packed across movies, with the segments they hold, read shot by
    shot from the shards (memory bounded by the batch, not by the movie's length).

    Yields (images (n, 3, S, S), segments) where each segment is (movie_id, n_shots, k, last):
    n_shots·k consecutive images of one movie (k keyframes per shot), ``last`` when the movie ends.
    A segment's keyframes share one size, so the transform runs batched per segment."""

    def __init__(self, shots_dir: Path, movies: list[tuple[str, str]], size: int, batch_images: int):
        self.dir, self.movies, self.batch = shots_dir, movies, batch_images
        self.transform = eval_transform(size)

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        images, segments, filled = [], [], 0
        for j, (movie_id, shard) in enumerate(self.movies):
            if j % nw != wid:
                continue
            run: list[np.ndarray] = []  # (k, h, w, 3) keyframes of the segment being filled
            samples = iter_tar(verified(self.dir / shard))
            sample = next(samples, None)
            while sample is not None:
                frames = decode_keyframes(sample)
                sample = next(samples, None)
                run.append(frames)
                filled += len(frames)
                last = sample is None
                full = filled + len(frames) > self.batch  # the next shot would not fit
                if last or full:
                    batch = np.stack(run)  # (n, k, h, w, 3)
                    n, k = batch.shape[:2]
                    flat = torch.from_numpy(batch.reshape(n * k, *batch.shape[2:])).permute(0, 3, 1, 2)
                    images.append(self.transform(flat))
                    segments.append((movie_id, n, k, last))
                    run = []
                if full:
                    yield torch.cat(images), segments
                    images, segments, filled = [], [], 0
        if images:
            yield torch.cat(images), segments

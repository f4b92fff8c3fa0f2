"""Stage train_movie_encoder: shot_features + movie_pairs → run_dir/movie_encoder/.

Positives: the pairs of ``movie_pairs/<movie_encoder.pairs_source>.parquet`` (S) whose movies have
features; ``heldout_fraction`` of them are held out. Negatives: random movie pairs not in S, as
many as positives, fresh each epoch for training (seeded by epoch) and fixed for the held-out set.
Binary cross-entropy on the pooled-adjacency logit. Checkpoints, resume (same step and data
position), NaN guard and TensorBoard as the shot encoder. Writes ``model.safetensors`` +
``config.json`` and ``metrics.json`` (held-out ROC-AUC and accuracy; when the catalogue has
genres, also ``genre_disjoint``: the same held-out positives against random pairs sharing no genre).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.features import ShotFeatures
from movies2scenes.metrics import roc_auc
from movies2scenes.models.movie import MovieEncoder, pad_or_crop
from movies2scenes.progress import progress
from movies2scenes.store import atomic_path, remove_stale_tmp, write_json
from movies2scenes.training import (
    check_finite,
    make_optimizer,
    make_accelerator,
    optimizer_step,
    resume,
    save_checkpoint,
    warmup_cosine,
)

from ._stage import is_done, stage_input_hash, stage_lock, write_done, write_pretraining_movies

STAGE = "train_movie_encoder"


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
def evaluate(model, bank: FeatureBank, pairs, device, batch: int = 64, desc: str = "held-out AUC") -> dict:
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


def run(cfg: Config, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/movie_encoder/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "movie_encoder") as lock:
        return _run(cfg, force, exclusive=lock.exclusive)


def _run(cfg: Config, force: bool = False, exclusive: bool = True) -> int:
    from accelerate.utils import set_seed

    started = time.time()
    run_dir = Path(cfg.run_dir)
    feat_dir, pairs_dir, out = run_dir / "shot_features", run_dir / "movie_pairs", run_dir / "movie_encoder"
    me, tr = cfg.movie_encoder, cfg.movie_encoder.train
    input_hash = stage_input_hash(feat_dir / "DONE.json", pairs_dir / "DONE.json")
    chash = config_hash({"movie_encoder": asdict(me), "seed": cfg.seed})
    if not force and is_done(out, chash, input_hash):
        print(f"train-movie-encoder: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    if exclusive:
        remove_stale_tmp(out)
    source_file = pairs_dir / f"{me.pairs_source}.parquet"
    if not source_file.is_file():
        raise ConfigError(f"movie_encoder.pairs_source {me.pairs_source!r}: {source_file} does not "
                          "exist (add it to movie_pairs.sources)")

    feats = ShotFeatures(feat_dir)
    have = set(feats.movie_ids)
    table = pq.read_table(source_file).to_pylist()
    positives = sorted({(r["movie_a"], r["movie_b"]) for r in table if r["movie_a"] in have and r["movie_b"] in have})
    movies = sorted({m for p in positives for m in p})
    if len(positives) < 4:
        raise ConfigError(f"{source_file}: only {len(positives)} pair(s) between movies with shot "
                          "features; need at least 4")
    train_pos, heldout = split_pairs(positives, movies, me.heldout_fraction, cfg.seed)
    pos_set = set(positives)
    n_free = len(movies) * (len(movies) - 1) // 2 - len(positives)
    if n_free < 1 or sum(1 for *_, label in heldout if label == 0) == 0:
        raise ConfigError(f"{len(movies)} movies and {len(positives)} similar pairs leave only {n_free} "
                          "non-similar pairs: too few to draw random negatives (lower "
                          "movie_pairs.per_movie or add movies)")

    accelerator = make_accelerator(tr, out / "logs")
    world, rank = accelerator.num_processes, accelerator.process_index
    if tr.batch_size % world:
        raise ConfigError(f"movie_encoder.train.batch_size {tr.batch_size} is not divisible by {world}")
    per_epoch = 2 * len(train_pos)
    batch_size = min(tr.batch_size, per_epoch - per_epoch % world)  # tiny S: one batch per epoch
    local = batch_size // world
    steps_per_epoch = per_epoch // batch_size
    total = tr.max_steps or tr.epochs * steps_per_epoch
    set_seed(cfg.seed)
    model = MovieEncoder(feats.dim, me.hidden, me.out_dim, me.dropout, me.max_shots, me.pool_kernel,
                         me.pool_stride)
    optimizer = make_optimizer(model.parameters(), tr)
    scheduler = warmup_cosine(optimizer, int(tr.warmup_epochs * steps_per_epoch), total)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler's state lives in progress.json
    ckpt_dir = out / "checkpoints"
    step, last_ckpt, resumed = resume(accelerator, ckpt_dir, f"{chash}:{input_hash}", force,
                                      "train-movie-encoder", total, scheduler)
    accelerator.init_trackers("movie_encoder", config={"lr": tr.lr, "batch_size": batch_size,
                                                       "pairs_source": me.pairs_source})
    bank = FeatureBank(feats, me.max_shots, movies)
    device = accelerator.device
    bar = progress(total=total, initial=step, desc="movie encoder", unit="step",
                   disable=not accelerator.is_main_process)
    loss_value = resumed.get("loss", float("nan"))  # the result if nothing is left to train
    while step < total:
        epoch, start = divmod(step, steps_per_epoch)
        items = epoch_pairs(train_pos, movies, pos_set, epoch, cfg.seed)
        for b in range(start, steps_per_epoch):
            base = b * batch_size + rank * local
            chunk = items[base:base + local]
            rng = np.random.default_rng([cfg.seed, 43, epoch, b, rank])  # crop offsets
            x1, m1 = bank.batch([a for a, _, _ in chunk], rng)
            x2, m2 = bank.batch([c for _, c, _ in chunk], rng)
            y = torch.tensor([label for _, _, label in chunk], device=device)
            with accelerator.autocast():
                logits = model(x1.to(device), m1.to(device), x2.to(device), m2.to(device))
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            check_finite(accelerator, loss, step, last_ckpt)
            optimizer_step(accelerator, model, optimizer, scheduler, loss, tr.grad_clip)
            step += 1
            loss_value = loss.item()
            if step % tr.log_every == 0 or step == total:
                accelerator.log({"loss": loss_value, "lr": scheduler.get_last_lr()[0]}, step=step)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            bar.update()
            if step % tr.checkpoint_every == 0 or step == total:
                last_ckpt = save_checkpoint(accelerator, ckpt_dir, step, tr.keep_checkpoints, scheduler,
                                            stamp=f"{chash}:{input_hash}", loss=loss_value)
            if step >= total:
                break
    bar.close()
    inner = accelerator.unwrap_model(model)
    metrics = evaluate(inner, bank, eval_sample(heldout, me.eval_pairs, cfg.seed), device)
    metrics["heldout_pairs"] = len(heldout)
    genres = _catalogue_genres(cfg)
    disjoint = genre_disjoint_heldout(heldout, movies, pos_set, genres, cfg.seed) if genres else []
    if disjoint:
        metrics["genre_disjoint"] = evaluate(inner, bank, eval_sample(disjoint, me.eval_pairs, cfg.seed), device,
                                             desc="genre-disjoint AUC")
    accelerator.log({"heldout_auc": metrics["auc"], "heldout_accuracy": metrics["accuracy"]}, step=step)
    if accelerator.is_main_process:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        write_json(out / "config.json", {"in_dim": feats.dim, "hidden": me.hidden, "out_dim": me.out_dim,
                                         "dropout": me.dropout, "max_shots": me.max_shots,
                                         "kernel": me.pool_kernel, "stride": me.pool_stride,
                                         "feature_mean": bank.mean.tolist(), "feature_std": bank.std.tolist()})
        metrics |= {"steps": step, "final_loss": loss_value, "pairs_source": me.pairs_source,
                    "train_positives": len(train_pos), "heldout_positives": int(sum(l for *_, l in heldout))}
        write_json(out / "metrics.json", metrics)
        pretrained_on = write_pretraining_movies(out, movies)
        write_done(out, STAGE, chash, input_hash, {"steps": step, "positives": len(positives)}, started,
                   outputs=["model.safetensors", "config.json"], heldout_auc=metrics["auc"],
                   pretraining_movies=pretrained_on)
        extra = (f"; vs genre-disjoint random pairs AUC {metrics['genre_disjoint']['auc']:.3f}"
                 if "genre_disjoint" in metrics else "")
        print(f"train-movie-encoder: {step} steps on {len(train_pos)} {me.pairs_source} pairs; held-out "
              f"AUC {metrics['auc']:.3f}, accuracy {metrics['accuracy']:.3f}{extra} → {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it closes the process group
    return 0


def _catalogue_genres(cfg: Config) -> dict[str, set[str]]:
    """Genres per movie from the catalogue, if one is configured and has genres (else {})."""
    if not cfg.catalogue or not Path(cfg.catalogue).is_file():
        return {}
    from movies2scenes.catalogue import load_catalogue

    genres = {m.movie_id: set(m.genres) for m in load_catalogue(cfg.catalogue)}
    return genres if any(genres.values()) else {}


def load_movie_encoder(path: str | Path, device="cpu") -> MovieEncoder:
    from safetensors.torch import load_file

    path = Path(path)
    c = checked_movie_config(path)
    model = MovieEncoder(c["in_dim"], c["hidden"], c["out_dim"], c["dropout"], c["max_shots"],
                         c["kernel"], c["stride"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval()


def checked_movie_config(path: Path) -> dict:
    """config.json of a saved movie encoder, its types and its shapes checked against the
    safetensors header before anything is built (a hostile config cannot exhaust memory)."""
    from movies2scenes.models.movie import pooled_size
    from movies2scenes.models.vit import ModelFileError, read_model_config, shape_mismatches, weight_shapes

    c, where = read_model_config(path), path / "config.json"
    for key in ("in_dim", "hidden", "out_dim", "max_shots", "kernel", "stride"):
        if not isinstance(c.get(key), int) or isinstance(c.get(key), bool) or c[key] < 1:
            raise ModelFileError(f"{where}: {key} must be an integer >= 1, got {c.get(key)!r}")
    if not isinstance(c.get("dropout"), (int, float)) or not 0 <= c["dropout"] < 1:
        raise ModelFileError(f"{where}: dropout must be a number in [0, 1), got {c.get('dropout')!r}")
    for key in ("feature_mean", "feature_std"):
        v = c.get(key)
        if not (isinstance(v, list) and len(v) == c["in_dim"] and all(isinstance(x, (int, float)) for x in v)):
            raise ModelFileError(f"{where}: {key} must be a list of in_dim ({c['in_dim']}) numbers")
    try:
        side = pooled_size(c["max_shots"], c["kernel"], c["stride"])
    except ValueError as e:
        raise ModelFileError(f"{where}: {e}") from None
    expected = {"fc1.weight": (c["hidden"], c["in_dim"]), "fc1.bias": (c["hidden"],),
                "fc2.weight": (c["out_dim"], c["hidden"]), "fc2.bias": (c["out_dim"],),
                "classifier.weight": (1, side * side), "classifier.bias": (1,)}
    bad = shape_mismatches(expected, weight_shapes(path / "model.safetensors"))
    if bad:
        raise ModelFileError(f"{where} does not match {path / 'model.safetensors'}: " + "; ".join(bad))
    return c

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
from movies2scenes.models.movie import MovieEncoder
from movies2scenes.movie_pairs import (
    FeatureBank,
    epoch_pairs,
    eval_sample,
    genre_disjoint_heldout,
    heldout_metrics,
    split_pairs,
)
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
    metrics = heldout_metrics(inner, bank, eval_sample(heldout, me.eval_pairs, cfg.seed), device)
    metrics["heldout_pairs"] = len(heldout)
    genres = _catalogue_genres(cfg)
    disjoint = genre_disjoint_heldout(heldout, movies, pos_set, genres, cfg.seed) if genres else []
    if disjoint:
        metrics["genre_disjoint"] = heldout_metrics(inner, bank, eval_sample(disjoint, me.eval_pairs, cfg.seed), device,
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



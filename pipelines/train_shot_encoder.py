"""Stage train_shot_encoder: shots → run_dir/shot_encoder/ (MoCo with neighbour positives).

Trains on the shots of the catalogue's ``train``-split movies only (``shot_encoder.train_split_only``):
evaluation movies are never seen in pretraining. A readable Accelerate loop. Resumes from the newest checkpoint at the same step and data position;
a NaN/inf loss stops the run with a clear message and leaves the last good checkpoint in place.
Writes ``model.safetensors`` + ``config.json`` (the query backbone: E_shot), ``head.safetensors``
(the projection head), ``metrics.json``, TensorBoard logs under ``logs/`` and ``DONE.json``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

from torch.utils.data import DataLoader

from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.data import TripletStream, epoch_triplets, loader_workers, movie_shots, train_transform
from movies2scenes.models.moco import MoCo
from movies2scenes.models.backbone import create_backbone, load_pretrained
from movies2scenes.models.folder import save_vit
from movies2scenes.store import remove_stale_tmp, write_json
from movies2scenes.monitor import make_knn_monitor
from movies2scenes.training import learning_metrics, make_accelerator, make_optimizer, moco_loop, resume, warmup_cosine

from ._stage import MODEL_FILES, init_stamp, is_done, stage_input_hash, stage_lock, write_done, write_pretraining_movies

STAGE = "train_shot_encoder"


def pretraining_movies(cfg: Config) -> set[str] | None:
    """The catalogue's train-split movie ids, or None (= every movie) when
    ``shot_encoder.train_split_only`` is off or no catalogue is given."""
    if not cfg.shot_encoder.train_split_only or not cfg.catalogue:
        return None
    from movies2scenes.catalogue import load_catalogue

    return {m.movie_id for m in load_catalogue(cfg.catalogue) if m.split == "train"}


def hashed_settings(ecfg) -> dict:
    """The shot_encoder section as it enters the config hash. ``init: random`` (the default) is
    left out, so the hash is the one from before ``init`` existed: upgrading does not make every
    trained E_shot stale."""
    settings = asdict(ecfg)
    if settings["init"] == "random":
        del settings["init"]
    return settings


def run(cfg: Config, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/shot_encoder/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "shot_encoder") as lock:
        return _run(cfg, force, exclusive=lock.exclusive)


def _run(cfg: Config, force: bool = False, exclusive: bool = True) -> int:
    from accelerate.utils import set_seed

    started = time.time()
    run_dir = Path(cfg.run_dir)
    shots_dir, out = run_dir / "shots", run_dir / "shot_encoder"
    ecfg, tr = cfg.shot_encoder, cfg.shot_encoder.train
    movies = movie_shots(shots_dir) if (shots_dir / "DONE.json").is_file() else {}
    kept = pretraining_movies(cfg)
    if kept is not None:
        movies = {shard: rows for shard, rows in movies.items() if rows[0][1] in kept}
    chash = config_hash({"shot_encoder": hashed_settings(ecfg), "seed": cfg.seed,
                         "movies": hashlib.sha256(" ".join(sorted(movies)).encode()).hexdigest()[:16]})
    input_hash = stage_input_hash(shots_dir / "DONE.json") + init_stamp(ecfg.init)
    if not force and is_done(out, chash, input_hash):
        print(f"train-shot-encoder: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    if exclusive:
        remove_stale_tmp(out)

    accelerator = make_accelerator(tr, out / "logs")
    world, rank = accelerator.num_processes, accelerator.process_index
    if tr.batch_size % world:
        raise ConfigError(f"shot_encoder.train.batch_size {tr.batch_size} is not divisible by the "
                          f"{world} processes")
    local_batch = tr.batch_size // world
    if not movies:
        raise ConfigError(f"no movies to train on: {shots_dir} has no shots of the catalogue's train split "
                          "(set shot_encoder.train_split_only=false to use every movie)")
    if accelerator.is_main_process:
        print(f"train-shot-encoder: {len(movies)} movies"
              + (" (the catalogue's train split)" if kept is not None else " (every movie of the shots stage)"))
    args = (cfg.seed, ecfg.query_fraction, ecfg.neighbour_offset, ecfg.shuffle_movies)
    steps_per_epoch = len(epoch_triplets(movies, 0, *args)) // tr.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"too few query shots for one batch of {tr.batch_size}: lower "
                          "shot_encoder.train.batch_size or raise shot_encoder.query_fraction")
    total = tr.max_steps or tr.epochs * steps_per_epoch
    warmup = int(tr.warmup_epochs * steps_per_epoch)

    set_seed(cfg.seed)  # identical initial weights on every rank
    try:
        backbone = create_backbone(ecfg.model)
    except ValueError as e:
        raise ConfigError(f"shot_encoder.model.arch: {e}") from None
    if ecfg.init != "random":
        dropped = load_pretrained(backbone, ecfg.init)
        if accelerator.is_main_process:
            print(f"train-shot-encoder: starting from {ecfg.init}"
                  + (f" (left out its classification head: {', '.join(dropped)})" if dropped else ""))
    model = MoCo(backbone, ecfg.moco.dim, ecfg.moco.mlp_hidden, ecfg.moco.queue_size,
                 ecfg.moco.momentum, ecfg.moco.temperature, seed=cfg.seed).to(accelerator.device)
    optimizer = make_optimizer(model.parameters(), tr)  # fused AdamW when the model is on CUDA
    scheduler = warmup_cosine(optimizer, warmup, total)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler's state lives in progress.json

    ckpt_dir = out / "checkpoints"
    step, last_ckpt, resumed = resume(accelerator, ckpt_dir, f"{chash}:{input_hash}", force,
                                      "train-shot-encoder", total, scheduler)
    accelerator.init_trackers("shot_encoder", config={"lr": tr.lr, "batch_size": tr.batch_size,
                                                      "arch": ecfg.model.arch, "steps": total})

    transform = train_transform(ecfg.model.img_size, ecfg.augment)

    def loader_for(epoch: int, start: int) -> DataLoader:
        stream = TripletStream(shots_dir, epoch_triplets(movies, epoch, *args), local_batch, rank, world,
                               transform, ecfg.model.img_size, cfg.seed, epoch, start,
                               cache_movies=ecfg.shuffle_movies + 1)
        return DataLoader(stream, batch_size=local_batch, num_workers=loader_workers(tr.num_workers))

    monitor = None
    if tr.knn_every and accelerator.is_main_process:
        monitor = make_knn_monitor(shots_dir, {rows[0][1] for rows in movies.values()}, ecfg.model.img_size,
                                   tr.knn_movies, tr.knn_per_movie, cfg.seed)
    step, loss_value, logged = moco_loop(accelerator, model, optimizer, scheduler, loader_for, step=step,
                                         total=total, steps_per_epoch=steps_per_epoch, tr=tr, ckpt_dir=ckpt_dir,
                                         stamp=f"{chash}:{input_hash}", last_ckpt=last_ckpt,
                                         desc="shot encoder", unit="shots", monitor=monitor, resumed=resumed)
    chosen_plus = logged.get("chosen_t_plus", float("nan"))

    if accelerator.is_main_process:
        from safetensors.torch import save_file

        inner = accelerator.unwrap_model(model)
        save_vit(inner.encoder_q, ecfg.model, out, stage=STAGE, moco=asdict(ecfg.moco))
        save_file({k: v.detach().cpu().contiguous() for k, v in inner.head_q.state_dict().items()},
                  str(out / "head.safetensors"))
        metrics = {"steps": step, "final_loss": loss_value, "steps_per_epoch": steps_per_epoch,
                   "chosen_t_plus": chosen_plus, "processes": world, "movies": len(movies),
                   **learning_metrics(logged, ecfg.moco.queue_size, monitor)}
        write_json(out / "metrics.json", metrics)
        pretrained_on = write_pretraining_movies(out, [rows[0][1] for rows in movies.values()])
        write_done(out, STAGE, chash, input_hash, {"steps": step, "epochs": step / steps_per_epoch,
                                                   "movies": len(movies)},
                   started, outputs=MODEL_FILES, final_loss=loss_value, pretraining_movies=pretrained_on)
        print(f"train-shot-encoder: {step} steps, final loss {loss_value:.4f} → {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it closes the process group
    return 0

"""Stage train_scene_encoder: scene_pairs → run_dir/scene_encoder/.

MoCo (``models/moco.py``, the pair form) on the mined scene pairs: the query is one scene of a pair
(n shots × k keyframes through ``SceneViT``), its positive the other scene, negatives the queue. Keys
are gathered from every process before they are enqueued. Data streams the training shards
sequentially (``data.ScenePairStream``); an epoch's order is a seeded function of the epoch, so a
resumed run sees exactly the batches an uninterrupted one would. Checkpoints, NaN guard,
TensorBoard and progress as the shot encoder. Writes ``model.safetensors`` + ``config.json`` (the
query encoder without its projection head — the product), ``head.safetensors``, ``metrics.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from movies2scenes.config import Config, ConfigError, config_hash
from movies2scenes.data import ScenePairStream, epoch_scene_pairs, loader_workers, scene_pair_keys, train_transform
from movies2scenes.models.moco import MoCo
from movies2scenes.models.vit import create_scene_vit, read_model_config, save_vit
from movies2scenes.store import read_json, remove_stale_tmp, write_json
from movies2scenes.monitor import make_knn_monitor
from movies2scenes.training import learning_metrics, make_accelerator, make_optimizer, moco_loop, resume, warmup_cosine

from ._stage import MODEL_FILES, init_stamp, is_done, stage_input_hash, stage_lock, write_done, write_pretraining_movies

STAGE = "train_scene_encoder"


def initial_encoder(cfg: Config):
    """The scene ViT, randomly initialised or with E_shot's weights (``scene_encoder.init``)."""
    sc = cfg.scene_encoder
    from movies2scenes.models.backbone import is_vit, load_pretrained

    if not is_vit(sc.model.arch):
        raise ConfigError(f"scene_encoder.model.arch {sc.model.arch!r}: the scene encoder must be a timm ViT "
                          "(it lays a scene's frames side by side and interpolates the ViT's positional "
                          "embedding); other backbones can be the shot encoder")
    encoder = create_scene_vit(sc.model, sc.grad_checkpointing)
    if sc.init not in ("random", "shot_encoder"):
        load_pretrained(encoder.vit, sc.init)
    elif sc.init == "shot_encoder":
        from safetensors.torch import load_file

        shot_dir = Path(cfg.run_dir) / "shot_encoder"
        if not (shot_dir / "model.safetensors").is_file():
            raise ConfigError(f"scene_encoder.init=shot_encoder: {shot_dir}/model.safetensors does not exist")
        shot_vit = read_model_config(shot_dir)["vit"]
        if shot_vit != asdict(sc.model):
            raise ConfigError(f"scene_encoder.init=shot_encoder needs scene_encoder.model equal to the shot "
                              f"encoder's ({shot_vit}), got {asdict(sc.model)}")
        encoder.vit.load_state_dict(load_file(str(shot_dir / "model.safetensors")))
    return encoder


def scene_pair_movies(scene_dir: Path) -> list[str]:
    """The movies whose scenes are in the mined pairs (what the scene encoder is trained on)."""
    import pyarrow.parquet as pq

    t = pq.read_table(scene_dir / "pairs.parquet", columns=["movie_a", "movie_b"])
    return sorted(set(t.column("movie_a").to_pylist()) | set(t.column("movie_b").to_pylist()))


def run(cfg: Config, force: bool = False) -> int:
    """The stage, holding the lock of run_dir/scene_encoder/ (one writer at a time)."""
    with stage_lock(Path(cfg.run_dir) / "scene_encoder") as lock:
        return _run(cfg, force, exclusive=lock.exclusive)


def _run(cfg: Config, force: bool = False, exclusive: bool = True) -> int:
    from accelerate.utils import set_seed

    started = time.time()
    run_dir = Path(cfg.run_dir)
    scene_dir, out = run_dir / "scene_pairs", run_dir / "scene_encoder"
    sc, tr = cfg.scene_encoder, cfg.scene_encoder.train
    chash = config_hash({"scene_encoder": asdict(sc), "seed": cfg.seed})
    inputs = [scene_dir / "DONE.json"] + ([run_dir / "shot_encoder" / "DONE.json"] if sc.init == "shot_encoder" else [])
    input_hash = stage_input_hash(*inputs) + init_stamp(sc.init)
    if not force and is_done(out, chash, input_hash):
        print(f"train-scene-encoder: {out} is up to date (DONE.json matches); nothing to do")
        return 0
    if exclusive:
        remove_stale_tmp(out)

    accelerator = make_accelerator(tr, out / "logs")
    world, rank = accelerator.num_processes, accelerator.process_index
    if tr.batch_size % world:
        raise ConfigError(f"scene_encoder.train.batch_size {tr.batch_size} is not divisible by the "
                          f"{world} processes")
    local_batch = tr.batch_size // world
    shards = scene_pair_keys(scene_dir)
    num_pairs = sum(len(v) for v in shards.values())
    steps_per_epoch = num_pairs // tr.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{num_pairs} scene pairs are too few for one batch of {tr.batch_size}: lower "
                          "scene_encoder.train.batch_size or mine more pairs")
    total = tr.max_steps or tr.epochs * steps_per_epoch
    warmup = int(tr.warmup_epochs * steps_per_epoch)

    set_seed(cfg.seed)  # identical initial weights on every rank
    model = MoCo(initial_encoder(cfg), sc.moco.dim, sc.moco.mlp_hidden, sc.moco.queue_size,
                 sc.moco.momentum, sc.moco.temperature, seed=cfg.seed).to(accelerator.device)
    optimizer = make_optimizer(model.parameters(), tr)  # fused AdamW when the model is on CUDA
    scheduler = warmup_cosine(optimizer, warmup, total)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler's state lives in progress.json
    forward = model
    if sc.compile and accelerator.device.type == "cuda":
        forward = torch.compile(model)

    ckpt_dir = out / "checkpoints"
    stamp = f"{chash}:{input_hash}"
    step, last_ckpt, resumed = resume(accelerator, ckpt_dir, stamp, force, "train-scene-encoder", total, scheduler)
    accelerator.init_trackers("scene_encoder", config={"lr": tr.lr, "batch_size": tr.batch_size,
                                                       "arch": sc.model.arch, "steps": total})
    transform = train_transform(sc.model.img_size, sc.augment)

    def loader_for(epoch: int, start: int) -> DataLoader:
        items = epoch_scene_pairs(shards, epoch, cfg.seed, sc.shuffle_shards, sc.swap_sides)
        stream = ScenePairStream(scene_dir, items, local_batch, rank, world, transform, cfg.seed, epoch,
                                 start, cache_shards=sc.shuffle_shards + 1)
        return DataLoader(stream, batch_size=local_batch, num_workers=loader_workers(tr.num_workers))

    n = int(read_json(scene_dir / "DONE.json").get("shots_per_scene", 0)) or cfg.scene_pairs.shots_per_scene
    monitor = None
    if tr.knn_every and accelerator.is_main_process and (run_dir / "shots" / "index.parquet").is_file():
        monitor = make_knn_monitor(run_dir / "shots", set(scene_pair_movies(scene_dir)), sc.model.img_size,
                                   tr.knn_movies, tr.knn_per_movie, cfg.seed, shots_per_item=n)
    step, loss_value, logged = moco_loop(accelerator, model, optimizer, scheduler, loader_for, step=step,
                                         total=total, steps_per_epoch=steps_per_epoch, tr=tr, ckpt_dir=ckpt_dir,
                                         stamp=stamp, last_ckpt=last_ckpt, desc="scene encoder", unit="scenes",
                                         forward=forward, monitor=monitor, resumed=resumed)

    if accelerator.is_main_process:
        from safetensors.torch import save_file

        inner = accelerator.unwrap_model(model)
        save_vit(inner.encoder_q.vit, sc.model, out, stage=STAGE, moco=asdict(sc.moco), kind="scene",
                 shots_per_scene=n)
        save_file({k: v.detach().cpu().contiguous() for k, v in inner.head_q.state_dict().items()},
                  str(out / "head.safetensors"))
        write_json(out / "metrics.json", {"steps": step, "final_loss": loss_value, "steps_per_epoch": steps_per_epoch,
                                          "scene_pairs": num_pairs, "processes": world,
                                          **learning_metrics(logged, sc.moco.queue_size, monitor)})
        pretrained_on = write_pretraining_movies(out, scene_pair_movies(scene_dir))
        write_done(out, STAGE, chash, input_hash, {"steps": step, "epochs": step / steps_per_epoch,
                                                   "scene_pairs": num_pairs}, started, outputs=MODEL_FILES,
                   final_loss=loss_value, pretraining_movies=pretrained_on)
        print(f"train-scene-encoder: {step} steps, final loss {loss_value:.4f} → {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # last: it closes the process group
    return 0

"""What every training stage shares: optimiser, warm-up + cosine schedule, checkpoints, NaN guard.

Checkpoints are Accelerate ``save_state`` folders (model weights as safetensors; optimiser and
scheduler through Accelerate, which reloads them with ``torch.load(weights_only=True)``) plus a
``progress.json`` holding the step. A checkpoint is written under a temporary name and renamed when
complete, so a kill mid-save never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig

CKPT_PREFIX = "checkpoint-"


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    fused = torch.cuda.is_available() and all(p.is_cuda for p in params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up to the base lr over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def latest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    best = None
    for p in Path(folder).glob(f"{CKPT_PREFIX}*"):
        prog = p / "progress.json"
        if p.is_dir() and prog.is_file():
            step = json.loads(prog.read_text())["step"]
            if best is None or step > best[1]:
                best = (p, step)
    return best


def save_checkpoint(accelerator, folder: Path, step: int, keep: int, **extra) -> Path:
    """Accelerate ``save_state`` into ``checkpoint-<step>`` atomically; keep the newest ``keep``."""
    folder = Path(folder)
    final = folder / f"{CKPT_PREFIX}{step:08d}"
    tmp = folder / f".tmp-{CKPT_PREFIX}{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step, **extra}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        ckpts = sorted(p for p in folder.glob(f"{CKPT_PREFIX}*") if p.is_dir())
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def check_finite(accelerator, loss: torch.Tensor, step: int, last_checkpoint: Path | None) -> None:
    """Raise :class:`NonFiniteLoss` on every rank if any rank's loss is NaN/inf."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if accelerator.gather(bad).sum().item() > 0:
        where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
        raise NonFiniteLoss(f"loss is {loss.item()} at step {step}; stopping ({where}). "
                            "Lower the learning rate or check the data.")


def make_accelerator(cfg: TrainConfig, project_dir: Path):
    """An Accelerator for a training stage. Without CUDA it is told ``cpu=True``: otherwise, under
    torchrun/`accelerate launch` on CPU, every process believes it is process 0 of 1 (Accelerate
    then skips DDP and lets every rank write checkpoints) while torch.distributed is initialised."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=mixed_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available(),
                       log_with="tensorboard", project_dir=str(project_dir))


def mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return setting


def resume(accelerator, ckpt_dir: Path, stamp: str, force: bool, name: str, total: int):
    """Load the newest checkpoint written with this ``stamp`` (config and input hashes); returns
    (step, its path) or (0, None). ``force`` deletes old checkpoints first."""
    if force and accelerator.is_main_process:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    found = latest_checkpoint(ckpt_dir)
    if not found:
        return 0, None
    path, step = found
    if json.loads((path / "progress.json").read_text()).get("stamp") != stamp:
        raise ConfigError(f"{path} was written with another config or other inputs; rerun with "
                          "--force to start over")
    accelerator.load_state(str(path))
    accelerator.print(f"{name}: resuming from {path.name} (step {step}/{total})")
    return step, path


def optimizer_step(accelerator, model, optimizer, scheduler, loss: torch.Tensor, grad_clip: float) -> None:
    """Backward (Accelerate scales/syncs), optional clipping, step, schedule, zero grads."""
    accelerator.backward(loss)
    if grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def moco_loop(accelerator, model, optimizer, scheduler, loader_for, *, step: int, total: int,
              steps_per_epoch: int, tr: TrainConfig, ckpt_dir: Path, stamp: str, last_ckpt: Path | None,
              desc: str, unit: str, forward=None, extra_name: str = "extra") -> tuple[int, float, dict]:
    """The readable training loop both MoCo stages share: for each epoch from ``step``'s position,
    ``loader_for(epoch, start_batch)`` yields batches (dicts of tensors); forward (the model returns
    a loss, or (loss, extra tensor) whose mean is logged), NaN guard, step, TensorBoard, progress bar
    with ``unit``/s, checkpoints every ``tr.checkpoint_every`` steps and at the end.
    Returns (step, last loss, last logged values)."""
    from tqdm import tqdm

    forward = forward or model
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", dynamic_ncols=True,
               disable=not accelerator.is_main_process or None)
    loss_value, logged, t0, seen = float("nan"), {}, time.time(), 0
    while step < total:
        epoch, start = divmod(step, steps_per_epoch)
        for batch in loader_for(epoch, start):
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with accelerator.autocast():
                out = forward(batch)
            loss, extra = out if isinstance(out, tuple) else (out, None)
            check_finite(accelerator, loss, step, last_ckpt)
            optimizer_step(accelerator, model, optimizer, scheduler, loss, tr.grad_clip)
            step += 1
            seen += tr.batch_size
            loss_value = loss.item()
            logged = {"loss": loss_value, "lr": scheduler.get_last_lr()[0]}
            if extra is not None:
                logged[extra_name] = extra.float().mean().item()
            if step % tr.log_every == 0 or step == total:
                accelerator.log(logged, step=step)
            bar.update()
            bar.set_postfix({"loss": f"{loss_value:.3f}", f"{unit}/s": f"{seen / (time.time() - t0):.1f}"})
            if step % tr.checkpoint_every == 0 or step == total:
                last_ckpt = save_checkpoint(accelerator, ckpt_dir, step, tr.keep_checkpoints, stamp=stamp,
                                            loss=loss_value)
            if step >= total:
                break
    bar.close()
    return step, loss_value, logged

"""What every training stage shares: optimiser, warm-up + cosine schedule, checkpoints, NaN guard.

Checkpoints are Accelerate ``save_state`` folders plus our ``progress.json``. What a resume loads,
and how — nothing in a checkpoint can run code:

* ``model.safetensors`` — safetensors (Accelerate);
* ``optimizer.bin``, ``random_states_<rank>.pkl`` — ``torch.load(weights_only=True)``; each is
  first loaded by us with the same safe loader, so a damaged or tampered file is a clear error
  (Accelerate alone would silently skip unreadable random states);
* ``progress.json`` — JSON: step, config/input stamp, last loss and logged values, and the LR
  scheduler's state. The scheduler is **not** registered with Accelerate: Accelerate reloads
  registered objects from ``custom_checkpoint_N.pkl`` with full (unrestricted) unpickling, i.e. a
  pickle that can run arbitrary code. A ``custom_checkpoint_*.pkl`` found in a checkpoint is refused
  without being read.

A checkpoint is written under a temporary name and renamed when complete, so a kill mid-save never
leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import ConfigError, NonFiniteLoss, OutputError
from .store import output_error

CKPT_PREFIX = "checkpoint-"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed safely (damaged, tampered with, or from an older format)."""


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (or SGD) over the trainable ``params``: tensors, or parameter groups (dicts with
    ``params`` and e.g. their own ``lr``, as torch.optim takes them)."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in params]
        tensors = [p for g in params for p in g["params"]]
    else:
        params = tensors = [p for p in params if p.requires_grad]
    fused = torch.cuda.is_available() and all(p.is_cuda for p in tensors)
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


def latest_checkpoint(folder: Path) -> tuple[Path, dict] | None:
    """The newest complete checkpoint under ``folder`` and its progress record, or None."""
    best = None
    for p in Path(folder).glob(f"{CKPT_PREFIX}*"):
        prog = p / "progress.json"
        if p.is_dir() and prog.is_file():
            prog = read_progress(p)
            if best is None or prog["step"] > best[1]["step"]:
                best = (p, prog)
    return best


def read_progress(ckpt: Path) -> dict:
    """A checkpoint's ``progress.json`` (JSON only), or :class:`CheckpointError` naming the file."""
    path = Path(ckpt) / "progress.json"
    try:
        prog = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); the checkpoint is damaged or was tampered "
                              f"with: delete {ckpt} or rerun with --force") from None
    if not isinstance(prog, dict) or not isinstance(prog.get("step"), int) or isinstance(prog.get("step"), bool):
        raise CheckpointError(f"{path}: no integer 'step'; delete {ckpt} or rerun with --force")
    return prog


def checkpoint_write_error(path: Path, e: Exception) -> Exception:
    """What a failed ``save_state`` is: our own write failing (disk full, quota, permissions) is an
    :class:`~movies2scenes.store.OutputError` (exit 4) — torch.save reports it as a RuntimeError
    ("unexpected pos", "PytorchStreamWriter failed writing file"), safetensors as an IoError; any
    other error is returned as it is."""
    if isinstance(e, OSError):
        return output_error(path, e)
    text = str(e)
    if any(s in text for s in ("unexpected pos", "PytorchStreamWriter", "IoError", "No space left", "File too large",
                               "Disk quota", "Read-only file system", "Permission denied")):
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        return OutputError(f"cannot write the checkpoint {path}: {first}; nothing was marked done: free space / "
                           "fix permissions and rerun to resume from the last complete checkpoint")
    return e


def save_checkpoint(accelerator, folder: Path, step: int, keep: int, scheduler, **extra) -> Path:
    """Accelerate ``save_state`` into ``checkpoint-<step>`` atomically; keep the newest ``keep``.
    The scheduler's state goes into ``progress.json`` (JSON), never into a pickle."""
    folder = Path(folder)
    final = folder / f"{CKPT_PREFIX}{step:08d}"
    tmp = folder / f".tmp-{CKPT_PREFIX}{step:08d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    except Exception as e:
        error = checkpoint_write_error(tmp, e)
        if error is e:
            raise
        raise error from e
    # every rank writes its own random_states_<rank>.pkl: none may still be writing into the
    # folder when it is renamed (else that file lands in a new .tmp- folder and the checkpoint
    # lacks it — seen with 2 gloo processes under load)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        try:
            (tmp / "progress.json").write_text(json.dumps({"step": step, "scheduler": sched, **extra}))
        except OSError as e:
            raise output_error(tmp / "progress.json", e) from e
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


CPU_PARAMETERS = 30_000_000  # above this a CPU step takes seconds (ViT-B/16, 86 M: ~10 s per paper.yaml step here)


def warn_large_model_on_cpu(command: str, model, device, steps: int) -> None:
    """One warning when a GPU-sized model (configs/paper.yaml's ViT-B/16) is about to train on the CPU."""
    if device.type != "cpu":
        return
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n > CPU_PARAMETERS:
        print(f"{command}: WARNING: training {n / 1e6:.0f} M parameters on the CPU ({steps} steps): expect seconds "
              "per step and days in all — this model size (configs/paper.yaml) is meant for GPUs; "
              "configs/demo.yaml is sized for a CPU", file=sys.stderr)


def checkpoint_due(accelerator, since: float, minutes: float) -> bool:
    """``minutes`` (> 0) have passed since ``since`` on the main process's clock; every process
    gets the main process's answer (saving a checkpoint is collective)."""
    if minutes <= 0:
        return False
    due = time.time() - since >= minutes * 60
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        due = bool(broadcast(torch.tensor([float(due)], device=accelerator.device), from_process=0).item())
    return due


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


def resume(accelerator, ckpt_dir: Path, stamp: str, force: bool, name: str, total: int, scheduler):
    """Load the newest checkpoint written with this ``stamp`` (config and input hashes); returns
    (step, its path, its progress record) or (0, None, {}). ``force`` deletes old checkpoints
    first. Nothing is unpickled except with ``weights_only=True`` (see the module doc)."""
    from accelerate.utils.other import load as safe_load  # torch.load(weights_only=True) + Accelerate's safe globals

    if force and accelerator.is_main_process:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    found = latest_checkpoint(ckpt_dir)
    if not found:
        return 0, None, {}
    path, prog = found
    step = prog["step"]
    if prog.get("stamp") != stamp:
        raise ConfigError(f"{path} was written with another config or other inputs; rerun with "
                          "--force to start over")
    if not isinstance(prog.get("scheduler"), dict):
        raise CheckpointError(f"{path}: no scheduler state in progress.json (a checkpoint of an older "
                              "movies2scenes, which pickled it); rerun with --force to start over")
    planted = sorted(path.glob("custom_checkpoint_*"))
    if planted:  # we never write these (Accelerate would unpickle them without restrictions)
        raise CheckpointError(f"{planted[0]}: unexpected pickle in the checkpoint (movies2scenes never writes "
                              "custom_checkpoint files; Accelerate would load it unsafely, so it is never read); "
                              f"the checkpoint is damaged or was tampered with: delete {path} or rerun with --force")
    loaded = {}
    for f in (path / "optimizer.bin", path / f"random_states_{accelerator.process_index}.pkl"):
        try:
            loaded[f.name] = safe_load(f, map_location="cpu")
        except Exception as e:  # UnpicklingError for payloads, EOFError/RuntimeError for damage
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"{f}: cannot be loaded safely ({type(e).__name__}: {first}); the "
                                  f"checkpoint is damaged or was tampered with: delete {path} or rerun "
                                  "with --force") from None
    check_progress(path, step, prog["scheduler"], loaded["optimizer.bin"])
    try:
        accelerator.load_state(str(path))
        scheduler.load_state_dict(dict(prog["scheduler"], lr_lambdas=[None] * len(scheduler.lr_lambdas)))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be resumed ({type(e).__name__}: {e}); delete it or rerun "
                              "with --force") from None
    accelerator.print(f"{name}: resuming from {path.name} (step {step}/{total})")
    return step, path, prog


def check_progress(path: Path, step: int, scheduler: dict, optimizer: dict) -> None:
    """The checkpoint's step is what its folder name, the scheduler (one ``step()`` per optimiser
    step) and the optimiser (AdamW counts its steps per parameter) say, or :class:`CheckpointError`:
    an edited ``progress.json`` would otherwise have an earlier step's weights saved as the end."""
    said = {"its folder name": int(path.name.rsplit("-", 1)[-1]) if path.name.rsplit("-", 1)[-1].isdigit() else None,
            "the scheduler's state": scheduler.get("last_epoch")}
    states = optimizer.get("state", {}) if isinstance(optimizer, dict) else {}
    counts = {int(v["step"]) for v in states.values() if isinstance(v, dict) and "step" in v}
    if counts:  # a parameter without a gradient in some step counts fewer: the most is the step
        said["the optimiser's state"] = max(counts)
    wrong = [f"{k} says {v}" for k, v in said.items() if v != step]
    if wrong:
        raise CheckpointError(f"{path / 'progress.json'}: step {step}, but {'; '.join(wrong)}: the checkpoint was "
                              f"edited or damaged; delete {path} or rerun with --force")


def optimizer_step(accelerator, model, optimizer, scheduler, loss: torch.Tensor, grad_clip: float) -> None:
    """Backward (Accelerate scales/syncs), optional clipping, step, schedule, zero grads."""
    accelerator.backward(loss)
    if grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_loop(accelerator, model, optimizer, scheduler, loader_for, *, step: int, total: int,
              steps_per_epoch: int, tr: TrainConfig, ckpt_dir: Path, stamp: str, last_ckpt: Path | None,
              desc: str, unit: str, forward=None, monitor=None, resumed: dict | None = None,
              keep_best: "BestByKnn | None" = None) -> tuple[int, float, dict]:
    """The readable training loop of the three training stages: for each epoch from ``step``'s position,
    ``loader_for(epoch, start_batch)`` yields batches (dicts of tensors); forward (the model returns
    (loss, stats): contrastive acc1/acc5 and stage extras, logged as batch means), NaN guard, step,
    TensorBoard, progress (a bar on a terminal, plain lines in logs) with ``unit``/s, the kNN
    ``monitor`` (:class:`movies2scenes.monitor.KnnMonitor`) of the query encoder before training and
    every ``tr.knn_every`` steps (each offered to ``keep_best``, the factorised encoder's drift guard),
    checkpoints every ``tr.checkpoint_every`` steps, every ``tr.checkpoint_minutes`` minutes and at the end.
    ``resumed`` is the progress record of the checkpoint resumed from: its loss and logged values
    are the result when nothing is left to train. Returns (step, last loss, last logged values);
    logged["knn_history"] holds every kNN evaluation of this run as [step, top-1] (and the drift
    guard's own score, e.g. the order accuracy, as a third entry where it measures one)."""
    from .progress import progress

    forward = forward or model
    main = accelerator.is_main_process
    bar = progress(total=total, initial=step, desc=desc, unit="step", disable=not main)
    resumed = resumed or {}
    loss_value, logged, t0, seen = resumed.get("loss", float("nan")), resumed.get("logged", {}), time.time(), 0
    history = list(logged.get("knn_history", []))
    monitor = monitor if main else None
    saved_at = time.time()  # the last checkpoint (tr.checkpoint_minutes counts from it)

    def knn() -> None:
        encoder = accelerator.unwrap_model(model).encoder_q
        top1 = monitor(encoder, accelerator.device)
        also = keep_best.offer(step, top1, encoder) if keep_best is not None else None
        history.append([step, top1] if also is None else [step, top1, also])
        accelerator.log({"knn_top1": top1, "knn_chance": monitor.chance,
                         **({} if also is None else {f"{keep_best.rule}_score": also})}, step=step)

    if monitor is not None and (step < total or total == 0) and not history:
        knn()  # the level before training (with 0 steps: of the starting weights, saved as they are)
    while step < total:
        epoch, start = divmod(step, steps_per_epoch)
        for batch in loader_for(epoch, start):
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with accelerator.autocast():
                loss, stats = forward(batch)
            check_finite(accelerator, loss, step, last_ckpt)
            optimizer_step(accelerator, model, optimizer, scheduler, loss, tr.grad_clip)
            step += 1
            seen += tr.batch_size
            loss_value = loss.item()
            logged = {"loss": loss_value, "lr": scheduler.get_last_lr()[0],
                      **{k: v.float().mean().item() for k, v in stats.items()}}
            if monitor is not None and tr.knn_every and (step % tr.knn_every == 0 or step == total):
                knn()
            if history:
                logged["knn_top1"] = history[-1][1]
            if step % tr.log_every == 0 or step == total:
                accelerator.log({k: v for k, v in logged.items() if k != "knn_top1"}, step=step)
            postfix = {"loss": f"{loss_value:.3f}"}
            if "acc1" in logged:
                postfix["acc1"] = f"{logged['acc1']:.2f}"
            if history:
                postfix["knn"] = f"{history[-1][1]:.2f}"
            bar.set_postfix({**postfix, f"{unit}/s": f"{seen / (time.time() - t0):.1f}"})
            bar.update()
            logged["knn_history"] = history
            # the clock is read (and, across processes, broadcast) on logging steps only: no collective per step
            if step % tr.checkpoint_every == 0 or step == total or (
                    step % tr.log_every == 0 and checkpoint_due(accelerator, saved_at, tr.checkpoint_minutes)):
                last_ckpt = save_checkpoint(accelerator, ckpt_dir, step, tr.keep_checkpoints, scheduler,
                                            stamp=stamp, loss=loss_value, logged=logged)
                saved_at = time.time()
            if step >= total:
                break
    bar.close()
    logged["knn_history"] = history
    return step, loss_value, logged


def learning_metrics(logged: dict, queue_size: int, monitor, kept_top1: float | None = None) -> dict:
    """What shows learning, for metrics.json: the last batch's contrastive acc1/acc5 with their
    chance levels k / (1 + K), the kNN monitor's history with its chance level, and its gain over
    the starting weights (``kept_top1``: the saved step's evaluation where a drift guard chose it)."""
    from .monitor import gain_over_start

    out = {k: logged[k] for k in ("acc1", "acc5") if k in logged}
    out["acc1_chance"], out["acc5_chance"] = 1 / (1 + queue_size), min(1.0, 5 / (1 + queue_size))
    if monitor is not None:
        history = logged.get("knn_history", [])
        out["knn"] = {"history": history, "chance": monitor.chance,
                      "probe_movies": monitor.movies, "probe_items": len(monitor.views),
                      "probe_queries": monitor.queries, "held_out": monitor.held_out}
        gain = gain_over_start(history, monitor.queries, monitor.chance, kept_top1)
        if gain is not None:
            out["knn"]["gain"] = gain
    return out


def gain_lines(command: str, learning: dict) -> list[str]:
    """The stage's closing line on its gain over its start (:func:`learning_metrics`), if measured."""
    from .monitor import gain_text

    gain = (learning.get("knn") or {}).get("gain")
    return [f"{command}: {gain_text(gain)}"] if gain else []


class BestByKnn:
    """The drift guard of the factorised scene encoder (``factorised.keep: knn``): the query
    encoder's weights at the kNN monitor's best evaluation (ties keep the earlier step, so an
    encoder that never beats its step-0 level is kept at step 0), in ``file`` (safetensors, written
    atomically, with the run's stamp, step and scores as metadata). A resumed run reads the file
    back when its stamp matches."""

    rule = "knn"

    def __init__(self, file: Path, stamp: str):
        self.file, self.stamp = Path(file), stamp
        self.step, self.top1 = None, float("-inf")
        self.meta = {}
        if self.file.is_file():
            from safetensors import safe_open

            with safe_open(str(self.file), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("stamp") == stamp:
                self.meta = meta
                self.step, self.top1 = int(meta["step"]), float(meta["top1"])

    def offer(self, step: int, top1: float, encoder: torch.nn.Module) -> float | None:
        """Keep ``encoder`` if its evaluation is the best so far; returns what else the guard
        measured (None here; :class:`BestByOrder`: the order accuracy), for the history."""
        if top1 > self.top1:
            self.keep(step, encoder, top1=top1)
        return None

    def keep(self, step: int, encoder: torch.nn.Module, **scores: float) -> None:
        from safetensors.torch import save_file

        from .store import atomic_path

        self.file.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        meta = {"stamp": self.stamp, "step": str(step), **{k: repr(float(v)) for k, v in scores.items()}}
        with atomic_path(self.file) as tmp:
            save_file(state, str(tmp), metadata=meta)
        self.step, self.top1, self.meta = step, float(scores["top1"]), meta

    def record(self, last_step: int) -> dict:
        """What metrics.json says of the kept step."""
        return {"rule": self.rule, "step": self.step, "knn_top1": self.top1, "last_step": last_step}

    def restore(self, encoder: torch.nn.Module) -> None:
        """Load the kept weights into ``encoder`` (nothing was kept: an error)."""
        from safetensors.torch import load_file

        if self.step is None:
            raise RuntimeError(f"{self.file}: no kNN evaluation was kept")
        encoder.load_state_dict(load_file(str(self.file)))



class BestByOrder(BestByKnn):
    """``factorised.keep: order``: among the evaluations whose kNN movie top-1 is at least step 0's
    (no movie identity lost on the monitor against the mean), the one with the highest held-out
    order accuracy (:class:`movies2scenes.monitor.OrderMonitor`, ``order``); ties keep the earlier
    step. Step 0 reads order at exactly 0.5, so an encoder that never reads order better — or only
    by losing kNN top-1 — is kept at step 0, the mean."""

    rule = "order"

    def __init__(self, file: Path, stamp: str, order):
        super().__init__(file, stamp)
        self.order_monitor = order
        self.start = float(self.meta["start"]) if "start" in self.meta else None
        self.order = float(self.meta["order"]) if "order" in self.meta else float("-inf")

    def offer(self, step: int, top1: float, encoder: torch.nn.Module) -> float:
        accuracy = self.order_monitor(encoder)
        if self.start is None:
            self.start = top1  # the first evaluation: step 0, the starting weights
        if top1 >= self.start and accuracy > self.order:
            self.keep(step, encoder, top1=top1, order=accuracy, start=self.start)
            self.order = accuracy
        return accuracy

    def record(self, last_step: int) -> dict:
        return super().record(last_step) | {"order_accuracy": self.order, "start_knn_top1": self.start}
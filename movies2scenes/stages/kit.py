"""The stage kit: a stage declares what it reads, what it hashes and what it writes; :meth:`Stage.run`
runs the protocol once for all of them.

    check the input → input hash (upstream DONE records) → config hash → lock the folder → up to
    date? → clear what a killed run left → drop the old DONE record → work() → DONE.json (+ the
    sha256 of its final files)

:class:`PerItemStage` adds the data-parallel protocol of the per-movie / per-unit stages: which
process owns which item, skip the items whose part record matches, process the rest, wait, and
let the one process that sees every part merge them. A stage module holds only its own work.
The primitives (locks, hashes, DONE records, process slots) are :mod:`movies2scenes.stages.protocol`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, final

from movies2scenes.config import Config
from movies2scenes.errors import ConfigError
from movies2scenes.integrity import difference
from movies2scenes.layout import DONE, RunLayout
from movies2scenes.errors import OutputError
from movies2scenes.store import remove_stale_tmp

from movies2scenes.pipeline import StageSpec

from .executors import executor_for
from .protocol import Parts, Slot, is_done, stage_input_hash, stage_lock, upstream_stamps, write_done
from .protocol import write_pretraining_movies


@dataclass
class StageContext:
    """What one run of a stage knows: its config, the run's layout, its folder and hashes."""

    cfg: Config
    run: RunLayout
    out: Path
    config_hash: str
    input_hash: str
    exclusive: bool  # no other process writes this folder (a single-process run)
    force: bool
    slot: Slot = field(default_factory=Slot)
    started: float = field(default_factory=time.time)

    @property
    def stamp(self) -> str:
        """What a part or checkpoint records to say it belongs to this config and these inputs."""
        return f"{self.config_hash}:{self.input_hash}"


@dataclass
class Finished:
    """What a stage's work leaves for its DONE record and its user."""

    counts: dict
    outputs: list[str] = field(default_factory=list)  # model files whose sha256 DONE.json records
    files: dict[str, list] = field(default_factory=dict)  # name → [size, sha256]: what later stages read
    extra: dict[str, Any] = field(default_factory=dict)  # more DONE.json fields
    say: list[str] = field(default_factory=list)  # stdout lines once DONE.json is written
    warn: list[str] = field(default_factory=list)  # stderr lines after those
    exit_code: int = 0


class Stage:
    """One stage of the pipeline. Subclasses set :attr:`spec`, give :meth:`config_hash` and
    :meth:`work`, and may override :meth:`check`, :meth:`input_hash` and :meth:`up_to_date`."""

    spec: ClassVar[StageSpec]

    def __init__(self, cfg: Config, force: bool = False, shard: str | None = None):
        self.cfg, self.force, self.shard = cfg, force, shard
        self.run_layout = RunLayout(cfg.run_dir)

    # --- what a stage declares ------------------------------------------------------------------
    def check(self) -> None:
        """Refuse bad input before the folder is touched (no lock, nothing written)."""

    def input_hash(self) -> str:
        """By default the DONE records of :attr:`StageSpec.needs` (an error names a missing one)."""
        return stage_input_hash(*(self.run_layout.done(f) for f in self.spec.needs))

    def upstream(self) -> list[str]:
        """The stage folders :meth:`input_hash` read (recorded as ``inputs``: a later rerun of one
        makes this stage stale to its readers and to ``m2s summary``)."""
        return list(self.spec.needs)

    def config_hash(self) -> str:
        raise NotImplementedError

    def up_to_date(self, ctx: StageContext) -> int:
        if ctx.slot.is_main:
            print(f"{self.spec.command}: {ctx.out} is up to date (DONE.json matches); nothing to do")
        return 0

    def work(self, ctx: StageContext) -> Finished | None:
        """The stage's own work; None when another process of the launch finishes the stage."""
        raise NotImplementedError

    def slot(self) -> Slot:
        return Slot()

    def folder(self) -> Path:
        """Where the stage writes: its run folder (a stage outside a run — ``m2s embed --catalogue`` —
        names its own)."""
        return self.run_layout.folder(self.spec.folder)

    def reach(self) -> None:
        """Reach what the work runs on (a Ray cluster) before the folder is locked: a bad address
        fails in seconds, holding nothing."""

    def after(self, ctx: StageContext) -> None:
        """Called last on every process that worked (after DONE.json on the one that wrote it)."""

    # --- the protocol, once ---------------------------------------------------------------------
    @final
    def run(self) -> int:
        started = time.time()
        self.check()  # bad input, a missing upstream stage: refused before the folder is created
        self.reach()
        input_hash = self.input_hash()
        inputs = upstream_stamps(self.run_layout.root, self.upstream())  # what it is built from, for staleness
        chash = self.config_hash()
        out = self.folder()
        with contextlib.ExitStack() as held:
            try:
                lock = held.enter_context(stage_lock(out, self.shard))
            except OutputError:  # the lock cannot be made (a read-only run dir): fine if nothing is to do
                if self.force or not is_done(out, chash, input_hash, content=self.cfg.verify):
                    raise
                return self.up_to_date(StageContext(self.cfg, self.run_layout, out, chash, input_hash, False,
                                                    self.force, self.slot(), started))
            ctx = StageContext(self.cfg, self.run_layout, out, chash, input_hash, lock.exclusive,
                               self.force, self.slot(), started)
            if not self.force and is_done(out, chash, input_hash, content=self.cfg.verify):
                return self.up_to_date(ctx)
            if lock.exclusive:
                remove_stale_tmp(out)  # what a killed run left; nobody else writes here (the lock)
            out.mkdir(parents=True, exist_ok=True)
            (out / DONE).unlink(missing_ok=True)
            result = self.work(ctx)
            if result is not None:
                write_done(out, self.spec.record, chash, input_hash, result.counts, started,
                           outputs=result.outputs, files=result.files, inputs=inputs, **result.extra)
                for line in result.say:
                    print(line)
                for line in result.warn:
                    print(line, file=sys.stderr)
            self.after(ctx)
            return result.exit_code if result is not None else 0


class PerItemStage(Stage):
    """A stage whose work is a list of independent items (movies, units of movie pairs). Each item
    leaves its files and then a part record (:attr:`parts`: one file per item, written by the kit)
    stamped with this config and these inputs; an item whose part the stage accepts and whose files
    are intact is not redone, so a killed run resumes; whoever finds every part present merges them
    into the stage's result and the kit prunes the parts of items that are gone. Where items run is
    the executor's (:mod:`movies2scenes.stages.executors`: local, a launch's share, or Ray), chosen
    once from ``executor.kind`` and ``--shard``; the stage never sees which."""

    unit: ClassVar[str] = "movie"  # what an item is, in messages
    parts: ClassVar[type[Parts]] = Parts  # how its part records are stored

    def __init__(self, cfg: Config, force: bool = False, shard: str | None = None):
        super().__init__(cfg, force, shard)
        self.executor = executor_for(cfg.executor, shard, self.ray_resources())

    def reach(self) -> None:
        self.executor.reach()

    def slot(self) -> Slot:
        return self.executor.slot()

    # --- what a per-item stage declares ---------------------------------------------------------
    def items(self, ctx: StageContext) -> list:
        raise NotImplementedError

    def part_key(self, item):
        """The item's key among the part records (a movie's id, a unit's number)."""
        return getattr(item, "movie_id", item)

    def accepts(self, ctx: StageContext, item, record: dict) -> bool:
        """Does a part record belong to this config and these inputs (by default: its ``stamp``)?"""
        return record.get("stamp") == ctx.stamp

    def size(self, ctx: StageContext, item) -> float:
        """Roughly how long the item takes (a movie's duration, a unit's movie pairs): Ray starts the
        longest first, so one long film does not finish alone at the end."""
        return 1.0

    def process_item(self, ctx: StageContext, item):
        """Write the item's files and return its part record (in a Ray worker, or in this process)."""
        raise NotImplementedError

    def process_items(self, ctx: StageContext, items: list):
        """(item, part record) for each of ``items`` in this process, as each finishes; a stage that
        can overlap items (decode the next movies while the model runs) streams them."""
        for item in items:
            yield item, self.process_item(ctx, item)

    def ray_resources(self) -> tuple[float, float]:
        """(CPUs, GPUs) one item takes on a Ray worker."""
        return 1.0, 0.0

    def item_name(self, item) -> str:
        """The item in messages (a movie's id)."""
        return str(self.part_key(item))

    def lost_part(self, ctx: StageContext, item, why: str) -> dict | None:
        """The part that records an item whose worker died every time as failed, or None (the
        default) where the stage has no failed items: then it stops once the others are done."""
        return None

    def merge(self, ctx: StageContext, items: list) -> Finished:
        raise NotImplementedError

    # --- the part records, kept by the kit ------------------------------------------------------
    def part_records(self, ctx: StageContext) -> Parts:
        return self.parts(ctx.out)

    @final
    def part(self, ctx: StageContext, item) -> dict | None:
        """The item's part record when it is there and belongs to this config and these inputs
        (else None); its ``files`` (name → [size, sha256]) are the files the item wrote."""
        record = self.part_records(ctx).read(self.part_key(item))
        return record if record is not None and self.accepts(ctx, item, record) else None

    def recorded(self, ctx: StageContext, item) -> bool:
        return self.part(ctx, item) is not None

    def intact(self, ctx: StageContext, part: dict) -> bool:
        """The part's files are there as written (sizes; with ``--verify`` their sha256 too)."""
        return not any(difference(ctx.out / name, record, self.cfg.verify)
                       for name, record in part.get("files", {}).items())

    def complete(self, ctx: StageContext, item) -> bool:
        """Nothing is left to do for the item: its part is recorded and its files are intact (a
        deleted or damaged file is redone)."""
        part = self.part(ctx, item)
        return part is not None and self.intact(ctx, part)

    @final
    def record(self, ctx: StageContext, item, part) -> None:
        """Record that the item is done (always in the process that runs the stage); a failed item
        is said on stderr as it happens."""
        self.part_records(ctx).write(self.part_key(item), part)
        if isinstance(part, dict) and part.get("status") == "failed":
            print(f"{self.spec.command}: {self.item_name(item)}: FAILED: {part.get('reason')}", file=sys.stderr)

    @final
    def work(self, ctx: StageContext) -> Finished | None:
        records = self.part_records(ctx)
        records.folder.mkdir(parents=True, exist_ok=True)
        items = self.items(ctx)
        todo = [item for item in self.executor.share(items) if ctx.force or not self.complete(ctx, item)]
        self.executor.run(self, ctx, todo)
        if not self.executor.merges():
            return None  # the main process of the launch merges
        pending = sum(not self.recorded(ctx, item) for item in items)
        if pending:
            slot = ctx.slot
            print(f"{self.spec.command}: process {slot.rank}/{slot.world} done; {pending} {self.unit}(s) still "
                  "pending in other processes — the last process to finish merges")
            return None
        finished = self.merge(ctx, items)
        records.prune(self.part_key(item) for item in items)  # items that left the stage's inputs
        return finished


@dataclass
class Schedule:
    """How long a training stage trains: batches per epoch, total and warm-up steps, the global batch."""

    steps_per_epoch: int
    total: int
    warmup: int
    batch_size: int


@dataclass
class Trained:
    """What the training loop ends with, for the stage's save()."""

    step: int
    loss: float
    logged: dict
    schedule: Schedule
    world: int
    monitor: Any = None


class TrainingStage(Stage):
    """A stage that learns weights from movies. Every process of an Accelerate launch trains; the
    main one saves. The kit owns the Accelerator (and its batch check), the seed, the optimiser and
    warm-up cosine schedule, resume from the newest checkpoint of this config and these inputs,
    the one training loop (:func:`movies2scenes.training.train_loop`: NaN guard, logging,
    checkpoints, kNN monitor) and the record of the movies the stage learned from. A stage gives
    its model, its batches and what it saves."""

    section: ClassVar[str]  # the config section whose ``train`` settings apply ("shot_encoder")
    progress_unit: ClassVar[str]  # what the progress line counts per second ("shots")

    @property
    def train_cfg(self):
        return getattr(self.cfg, self.section).train

    # --- what a trainer gives -------------------------------------------------------------------
    def prepare(self, ctx: StageContext) -> None:
        """Read the inputs and refuse what cannot train, before the Accelerator exists."""

    def schedule(self, world: int) -> Schedule:
        raise NotImplementedError

    def epochs(self, examples: int, batch_size: int, too_few: str) -> Schedule:
        """The schedule of ``examples`` per epoch in global batches (``too_few``: the error when not
        even one batch fits): ``max_steps`` or ``epochs`` epochs, ``warmup_epochs`` of warm-up; with
        both 0, no step (the starting weights are saved as they are)."""
        tr = self.train_cfg
        steps_per_epoch = examples // batch_size
        if not tr.max_steps and not tr.epochs:  # nothing to train: the starting weights are saved as they are
            return Schedule(max(1, steps_per_epoch), 0, 0, batch_size)
        if steps_per_epoch == 0:
            raise ConfigError(too_few)
        return Schedule(steps_per_epoch, tr.max_steps or tr.epochs * steps_per_epoch,
                        int(tr.warmup_epochs * steps_per_epoch), batch_size)

    def model(self, device) -> Any:
        """The model to train (on ``device``); seeded identically on every rank."""
        raise NotImplementedError

    def parameters(self, model):
        return model.parameters()

    def batches(self, epoch: int, start: int):
        """The epoch's batches from batch ``start`` on, for this process (dicts of tensors)."""
        raise NotImplementedError

    def forward(self, model):
        """What maps a batch to (loss, stats); by default the (prepared) model itself."""
        return model

    def monitor(self, ctx: StageContext):
        """A kNN monitor of the query encoder (main process only), or None."""
        return None

    def tracked(self) -> dict:
        """Hyper-parameters shown beside the logs."""
        return {"lr": self.train_cfg.lr, "batch_size": self.train_cfg.batch_size}

    def save(self, ctx: StageContext, model, trained: Trained) -> Finished:
        raise NotImplementedError

    def learned_from(self, ctx: StageContext, movie_ids) -> dict:
        """Record the movies this stage learned from (the evaluation's leakage guard reads it)."""
        return {"pretraining_movies": write_pretraining_movies(ctx.out, movie_ids)}

    # --- the training protocol, once ------------------------------------------------------------
    @final
    def work(self, ctx: StageContext) -> Finished | None:
        from accelerate.utils import set_seed

        from movies2scenes.training import (make_accelerator, make_optimizer, resume, train_loop,
                                            warmup_cosine, warn_large_model_on_cpu)

        tr = self.train_cfg
        self.prepare(ctx)
        self.accelerator = accelerator = make_accelerator(tr, ctx.out / "logs")
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        if tr.batch_size % self.world:
            raise ConfigError(f"{self.section}.train.batch_size {tr.batch_size} is not divisible by the "
                              f"{self.world} processes")
        plan = self.plan = self.schedule(self.world)
        set_seed(self.cfg.seed)  # identical initial weights on every rank
        model = self.model(accelerator.device)
        warn_large_model_on_cpu(self.spec.command, model, accelerator.device, plan.total)
        optimizer = make_optimizer(self.parameters(model), tr)  # fused AdamW when the model is on CUDA
        scheduler = warmup_cosine(optimizer, plan.warmup, plan.total)
        model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler's state lives in progress.json
        ckpt_dir = ctx.out / "checkpoints"
        step, last_ckpt, resumed = resume(accelerator, ckpt_dir, ctx.stamp, ctx.force, self.spec.command,
                                          plan.total, scheduler)
        accelerator.init_trackers(self.spec.folder, config=self.tracked())
        monitor = self.monitor(ctx) if tr.knn_every and accelerator.is_main_process else None
        self.keeper = self.keep_best(ctx, monitor)
        step, loss, logged = train_loop(
            accelerator, model, optimizer, scheduler, self.batches, step=step, total=plan.total,
            steps_per_epoch=plan.steps_per_epoch, tr=tr, ckpt_dir=ckpt_dir, stamp=ctx.stamp, last_ckpt=last_ckpt,
            desc=self.spec.folder.replace("_", " "), unit=self.progress_unit,
            forward=self.forward(model), monitor=monitor, resumed=resumed,
            keep_best=self.keeper)
        if not accelerator.is_main_process:
            return None
        return self.save(ctx, accelerator.unwrap_model(model), Trained(step, loss, logged, plan, self.world, monitor))

    def keep_best(self, ctx: StageContext, monitor):
        """The factorised scene encoder's drift guard (``training.BestByKnn``), or None."""
        return None

    def after(self, ctx: StageContext) -> None:
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()  # last: it closes the process group

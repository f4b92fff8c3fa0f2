"""The executors' *schedule*, measured where two cores cannot blur it (issue 43): a bench-only
per-item stage whose item only sleeps — its cost is wall time, not CPU — run by each executor with
8 workers on this 2-core machine (``python bench/executors.py --schedule``).

Executors, each through its ``run(stage, ctx, items)`` as a stage calls it:
* ``round-robin`` — 8 :class:`LaunchExecutor` shares (``--shard i/8``: item i to worker i % 8), as
  8 threads of this process (the items sleep; a thread per share measures the same schedule as a
  process per share, without 8 interpreters' start-up);
* ``Ray, longest first`` — :class:`RayExecutor` with 8 worker actors on a local 2-CPU cluster
  (``executor.workers=8``, a quarter CPU per item); its actors' start is timed apart from the
  schedule; ``executor.recycle_after`` above the item count (recycling costs a worker restart per
  ``recycle_after`` items — priced separately, in seconds per restart: at the bench's time scale a
  restart would stand for hours of a real film's decoding);
* ``Ray, a busy worker SIGKILLed`` — the same, one worker killed mid-item after a few items.

Distributions of per-item time (scaled so that the ideal makespan is ``--ideal`` seconds):
* ``skewed`` — issue 28's catalogue, 1 film of 24,000 frames + 24 of 1,500 (per-movie detect time ∝
  frames: the same film part, the same decoder; measured there at 84.5 s of work in all);
* ``long-tail`` — 10⁴ titles whose runtimes are drawn (seeded) from a log-normal around 95 minutes
  (σ 0.45: episodes of 20–45 minutes to epics of 4 hours; an assumed shape, not a measured
  catalogue), per-title time ∝ runtime.

The ideal makespan is the lower bound of any schedule: max(total ÷ 8, the longest item) when all
8 workers start at once. Ray's actors come up one after another (each imports the package: seconds
on two busy cores), so each Ray row is also judged against the lower bound *given when its workers
came up* (each worker writes its start time): the least T with Σ_w max(0, T − up_w) ≥ the work and
T ≥ the first start + the longest item. Printed per executor: when the workers were up, the makespan
(the executor's start to the last item's end), that ideal and the ratio. Targets (issue 43): Ray ≤
1.10 × ideal on both; the SIGKILLed run adds ≤ one item's time."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from movies2scenes.config import Config, ExecutorConfig
from movies2scenes.layout import RunLayout
from movies2scenes.stages.executors import LaunchExecutor, RayExecutor
from movies2scenes.stages.kit import Finished, PerItemStage, StageContext, StageSpec

WORKERS = 8


class Sleeper(PerItemStage):
    """A bench-only per-item stage: an item sleeps its seconds and records when it ran."""

    spec = StageSpec("bench-sleep", "sleep", "bench_sleep")
    unit = "item"

    def __init__(self, cfg: Config, seconds: dict[str, float]):
        super().__init__(cfg)
        self.seconds = seconds

    def config_hash(self) -> str:
        return hashlib.sha256(repr(sorted(self.seconds.items())).encode()).hexdigest()[:16]

    def items(self, ctx: StageContext) -> list[str]:
        return list(self.seconds)

    def size(self, ctx: StageContext, item: str) -> float:
        return self.seconds[item]

    def ray_resources(self) -> tuple[float, float]:
        return 2.0 / WORKERS, 0.0  # 8 sleeping workers on a 2-CPU cluster

    def process_item(self, ctx: StageContext, item: str) -> dict:
        start = time.time()
        time.sleep(self.seconds[item])
        return {"item": item, "start": start, "end": time.time(), "pid": os.getpid(), "stamp": ctx.stamp, "files": {}}

    def merge(self, ctx: StageContext, items: list) -> Finished:
        return Finished({"items": len(items)})

    def __setstate__(self, state: dict) -> None:
        """On a Ray worker, as its actor starts: say when this worker came up (``sleep/ready/PID``)."""
        self.__dict__.update(state)
        ready = Path(self.cfg.run_dir) / self.spec.folder / "ready"
        ready.mkdir(parents=True, exist_ok=True)
        (ready / str(os.getpid())).write_text(repr(time.time()))


Sleeper.__module__ = "schedule"  # Ray's workers import it by this name (bench/ is on their path)


def skewed() -> list[float]:
    return [24000.0] + [1500.0] * 24


def long_tail(n: int = 10_000, seed: int = 0) -> list[float]:
    minutes = np.exp(np.random.default_rng(seed).normal(np.log(95.0), 0.45, n))
    return np.clip(minutes, 20.0, 240.0).tolist()


def scaled(cost: list[float], ideal: float) -> dict[str, float]:
    """Per-item seconds whose ideal makespan on WORKERS workers is ``ideal``."""
    bound = max(sum(cost) / WORKERS, max(cost))
    return {f"i{k:05d}": c * ideal / bound for k, c in enumerate(cost)}


def context(stage: Sleeper, run: Path) -> StageContext:
    out = run / stage.spec.folder
    (out / "parts").mkdir(parents=True, exist_ok=True)
    return StageContext(stage.cfg, RunLayout(str(run)), out, stage.config_hash(), "bench", True, True)


def finished(stage: Sleeper, ctx: StageContext, t0: float) -> tuple[float, int]:
    """When the last item ended (seconds after ``t0``), and how many parts there are."""
    parts = [stage.part_records(ctx).read(k) for k in stage.seconds]
    parts = [p for p in parts if p]
    return max(p["end"] for p in parts) - t0, len(parts)


def ideal_given(ready: list[float], seconds: dict[str, float]) -> float:
    """The lower bound of any schedule's makespan when worker w is up from ``ready[w]`` (seconds
    after the start): the least T with Σ_w max(0, T − ready[w]) ≥ the total work and T ≥ the first
    worker's start + the longest item (bisection)."""
    total, longest = sum(seconds.values()), max(seconds.values())
    lo, hi = min(ready) + longest, max(ready) + total
    lo = max(lo, min(ready) + total / len(ready))
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(max(0.0, mid - r) for r in ready) >= total:
            hi = mid
        else:
            lo = mid
    return max(hi, min(ready) + longest)


def ready_times(ctx: StageContext, t0: float) -> list[float]:
    return sorted(float(p.read_text()) - t0 for p in (ctx.out / "ready").glob("*"))


def round_robin(seconds: dict[str, float], work: Path) -> dict:
    cfg = Config(run_dir=str(work))
    stage = Sleeper(cfg, seconds)
    ctx = context(stage, work)
    items = stage.items(ctx)
    shares = [LaunchExecutor(f"{i}/{WORKERS}") for i in range(WORKERS)]
    threads = [threading.Thread(target=ex.run, args=(stage, ctx, ex.share(items))) for ex in shares]
    t0 = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    end, n = finished(stage, ctx, t0)
    return {"makespan": end, "ready": [0.0] * WORKERS, "items": n}


def on_ray(seconds: dict[str, float], work: Path, kill_after: int | None = None) -> dict:
    from testkit.ray_faults import kill_a_busy_worker

    settings = ExecutorConfig(kind="ray", workers=WORKERS, recycle_after=len(seconds) + 1)
    cfg = Config(run_dir=str(work), executor=settings)
    stage = Sleeper(cfg, seconds)
    ctx = context(stage, work)
    killed: list[int] = []
    killer = None
    if kill_after is not None:
        killer = threading.Thread(target=kill_a_busy_worker, args=(ctx.out / "parts", killed, kill_after, 120))
        killer.start()
    t0 = time.time()
    RayExecutor(settings, *stage.ray_resources()).run(stage, ctx, stage.items(ctx))
    if killer is not None:
        killer.join()
    end, n = finished(stage, ctx, t0)
    return {"makespan": end, "ready": ready_times(ctx, t0)[:WORKERS], "items": n, "killed": killed}


def lpt_model(seconds: dict[str, float]) -> tuple[float, float]:
    """The two schedules on paper (no overheads): round-robin by index, longest first."""
    cost = list(seconds.values())
    rr = max(sum(cost[w::WORKERS]) for w in range(WORKERS))
    loads = [0.0] * WORKERS
    for c in sorted(cost, reverse=True):
        loads[loads.index(min(loads))] += c
    return rr, max(loads)


def run_schedule(ideal: float, long_tail_items: int, kill: bool = True) -> bool:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ok = True
    try:
        for name, cost in (("skewed (1 × 24,000 + 24 × 1,500 frames)", skewed()),
                           (f"long-tail ({long_tail_items:,} titles)", long_tail(long_tail_items))):
            seconds = scaled(cost, ideal)
            lower = max(sum(seconds.values()) / WORKERS, max(seconds.values()))
            rr_paper, lpt_paper = lpt_model(seconds)
            rows = []
            with tempfile.TemporaryDirectory(prefix="m2s-schedule-") as tmp:
                rows.append(("round-robin (8 × --shard i/8)", round_robin(seconds, Path(tmp) / "rr")))
                rows.append(("Ray, 8 workers, longest first", on_ray(seconds, Path(tmp) / "ray")))
                if kill:
                    rows.append(("Ray, one busy worker SIGKILLed", on_ray(seconds, Path(tmp) / "kill", kill_after=3)))
            print(f"\n{name}: {len(seconds):,} items, {sum(seconds.values()):.1f} s of work, longest "
                  f"{max(seconds.values()):.2f} s, ideal (max(total ÷ 8, longest)) {lower:.2f} s; on paper: "
                  f"round-robin {rr_paper / lower:.2f} ×, longest first {lpt_paper / lower:.2f} × ideal")
            print("| executor | workers up after (s) | makespan (s) | ideal given the workers' start (s) | ÷ that ideal "
                  "| items |\n|---|---|---:|---:|---:|---:|")
            for label, r in rows:
                r["ideal"] = ideal_given(r["ready"], seconds)
                up = f"{min(r['ready']):.1f}–{max(r['ready']):.1f}"
                print(f"| {label} | {up} | {r['makespan']:.2f} | {r['ideal']:.2f} | {r['makespan'] / r['ideal']:.3f} "
                      f"| {r['items']} |")
            ray_row = rows[1][1]
            ok &= ray_row["items"] == len(seconds) and rows[0][1]["items"] == len(seconds)
            if kill:
                k = rows[2][1]
                extra = (k["makespan"] - k["ideal"]) - (ray_row["makespan"] - ray_row["ideal"])
                print(f"SIGKILL: worker {'killed' if k['killed'] else 'NOT killed (none busy)'}; time beyond its ideal "
                      f"− the undisturbed run's: {extra:+.2f} s (the longest item {max(seconds.values()):.2f} s, a "
                      f"median one {float(np.median(list(seconds.values()))):.2f} s); {k['items']}/{len(seconds)} items")
                ok &= k["items"] == len(seconds)
    finally:
        ray.shutdown()
    return ok


def fleet(titles: int = 30_000, workers: tuple[int, ...] = (128, 512, 2048), rate: float = 197.0) -> None:
    """The schedules on paper for a fleet: per-title decode time = runtime × 24 fps ÷ ``rate``
    frames/s per core (197: PyAV on 720p, bench/RESULTS.md), longest first vs round-robin."""
    import heapq

    cost = np.array(long_tail(titles)) * 24 * 60 / rate
    print(f"{titles:,} titles, {cost.sum() / 3600:,.0f} core-hours of decode + detection")
    print("| workers | ideal makespan (h) | longest first ÷ ideal | round-robin ÷ ideal |\n|---:|---:|---:|---:|")
    for w in workers:
        heap = [(0.0, i) for i in range(w)]
        for c in sorted(cost, reverse=True):
            load, i = heapq.heappop(heap)
            heapq.heappush(heap, (load + c, i))
        lpt = max(load for load, _ in heap)
        rr = max(cost[k::w].sum() for k in range(w))
        ideal = max(cost.sum() / w, cost.max())
        print(f"| {w:,} | {ideal / 3600:.1f} | {lpt / ideal:.3f} | {rr / ideal:.3f} |")


if __name__ == "__main__":
    fleet()  # python bench/schedule.py: the fleet's schedules on paper (docs/scale.md)

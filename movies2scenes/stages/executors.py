"""Where a per-item stage's items run — three executors, peers behind one interface, chosen once
(:func:`executor_for`) from ``executor.kind`` and ``--shard`` / a launch's ranks. A per-item stage
(:class:`movies2scenes.stages.kit.PerItemStage`) never sees which one runs it: it gives its items,
processes items (``process_items`` here, ``process_item`` on a worker) and records what each item
left (``record``); the executor decides where the processing happens.

* :class:`LocalExecutor` — this process, the items one after the other (or streamed, where the
  stage overlaps them: extract-shot-features decodes the next movies while the model runs);
* :class:`LaunchExecutor` — one process of several (``--shard i/n`` job arrays, or the ranks of
  ``accelerate launch`` / torchrun): item ``i`` belongs to the process with ``i % world == rank``;
  under Accelerate the main process merges, under ``--shard`` whichever process sees every part;
* :class:`RayExecutor` — a Ray cluster: one call per item to a pool of worker actors (each holds a
  copy of the stage, so what an item needs — an encoder, a movie's embeddings — is loaded once per
  worker, not once per item), longest items first, at most one item in flight per worker. The
  driver records each item's part as its result arrives (the parts stay the completion markers: a
  killed driver's rerun redoes only what has no part), then the stage merges once, as locally.

Connecting to Ray: before the stage locks its folder (:meth:`Executor.reach`, called by the kit), an
address is first reached over TCP within ``executor.connect_timeout_s`` — Ray itself retries a dead
address for many minutes — and a cluster recorded by ``ray start`` on this machine is joined as Ray
does, never started over; anything that cannot connect is a :class:`ConfigError` (exit 2) saying why.

Faults on Ray: a worker that dies mid-item (a killed process, a lost node) is replaced and the item
retried (``executor.max_retries``, exponential backoff). An item whose worker died every time is
*lost*: the other items go on; the stage then records it as failed where it has such a record
(detect-shots: failures.jsonl, :meth:`PerItemStage.lost_part`), else the stage stops after the others
with an :class:`ExecutorError` naming it (a rerun tries only it again). An item that fails because
of its *input* is not a fault here: the stage records it in its part and it is not retried. Anything
the stage raises (our own write errors: exit 4) stops the stage as locally. Workers are replaced
after ``executor.recycle_after`` items (decoders leak on long videos).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import deque
from urllib.parse import urlsplit

from typing import ClassVar

from movies2scenes.config import ExecutorConfig
from movies2scenes.errors import ConfigError
from movies2scenes.progress import progress

from movies2scenes.errors import ExecutorError

from .protocol import Slot, process_slot


def death(error: BaseException) -> str:
    """One line on why a worker died, in our words: the exception's class and the first line of
    its message that is not Ray's task or actor repr, without colour codes."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines()
    first = next((t.strip() for t in lines if t.strip() and "Actor(" not in t and not t.startswith("ray::")), "")
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def reachable(address: str, timeout: float) -> None:
    """Refuse (ConfigError) an address where nothing answers a TCP connect within ``timeout`` s."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"Ray address {address!r} is not host:port or ray://host:port")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"no Ray cluster answers at {address!r} within {timeout:g} s ({e.strerror or e}); "
                          "start one (`ray start --head`) or give the right --ray-address") from None


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor.kind=ray needs Ray: pip install 'movies2scenes[ray]'") from None
    return ray


class Executor:
    """Runs a per-item stage's unfinished items and records each one's part (``stage.record``)."""

    kind: ClassVar[str]

    def slot(self) -> Slot:
        """This process's place among the processes that run the stage (one, unless launched)."""
        return Slot()

    def reach(self) -> None:
        """Reach what the items run on before the stage locks its folder (a cluster), or fail fast."""

    def share(self, items: list) -> list:
        """The items this process is responsible for."""
        return items

    def run(self, stage, ctx, todo: list) -> None:
        raise NotImplementedError

    def merges(self) -> bool:
        """After :meth:`run`: may this process merge (once every part is there)?"""
        return True


class LocalExecutor(Executor):
    """This process, the items in the stage's order (streamed where the stage overlaps them)."""

    kind = "local"

    def run(self, stage, ctx, todo: list) -> None:
        slot = ctx.slot
        bar = progress(total=len(todo), desc=f"{stage.spec.command} [{slot.rank + 1}/{slot.world}]", unit=stage.unit,
                       position=slot.rank)
        for item, part in stage.process_items(ctx, todo):
            stage.record(ctx, item, part)
            bar.update()
        bar.close()


class LaunchExecutor(LocalExecutor):
    """One process of a launch (``--shard i/n``, or Accelerate's ranks under WORLD_SIZE > 1): its
    share of the items, locally; every process waits for the others (Accelerate), then the main one
    merges — under ``--shard`` nobody waits and the last process to see every part merges."""

    kind = "launch"

    def __init__(self, shard: str | None = None):
        self.shard, self._slot = shard, None

    def slot(self) -> Slot:
        if self._slot is None:  # Accelerate's state is made once, when the stage starts its work
            self._slot = process_slot(self.shard)
        return self._slot

    def share(self, items: list) -> list:
        slot = self.slot()
        return [item for i, item in enumerate(items) if slot.owns(i)]

    def merges(self) -> bool:
        slot = self.slot()
        slot.wait_for_everyone()
        return slot.is_main or slot.state is None


def executor_for(settings: ExecutorConfig, shard: str | None = None, resources: tuple[float, float] = (1.0, 0.0)) \
        -> Executor:
    """The one executor a stage runs on: Ray for ``executor.kind=ray`` (never with ``--shard`` or under
    a launch of several processes), a launch's share for ``--shard`` / WORLD_SIZE > 1, else local."""
    if settings.kind == "ray":
        if shard:
            raise ConfigError("--shard splits the items over processes you start yourself; with "
                              "executor.kind=ray the Ray cluster does (drop one of the two)")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("executor.kind=ray under a launch of several processes would do every item once "
                              "per process: start the stage as one process (the Ray cluster spreads the items)")
        return RayExecutor(settings, *resources)
    if shard or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return LaunchExecutor(shard)
    return LocalExecutor()


class StageWorker:
    """A Ray actor: one copy of the stage, processing the items it is sent, one at a time."""

    def __init__(self, stage, ctx):
        self.stage, self.ctx = stage, ctx

    def process(self, item):
        return self.stage.process_item(self.ctx, item)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """A Ray cluster's worker actors, longest items first (see the module's text)."""

    kind = "ray"

    def __init__(self, settings: ExecutorConfig, cpus_per_item: float = 1.0, gpus_per_item: float = 0.0):
        self.settings, self.cpus, self.gpus = settings, cpus_per_item, gpus_per_item

    def reach(self) -> None:
        self.connect()

    def connect(self):
        """Join the cluster at executor.address / $RAY_ADDRESS, else the one ``ray start`` recorded on
        this machine, else start a local one — in seconds, or a ConfigError saying why not."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        address = self.settings.address or os.environ.get("RAY_ADDRESS") or None
        if address in (None, "auto"):
            address = recorded_cluster(ray, address)
        if address and address != "local":
            reachable(address, self.settings.connect_timeout_s)
        extra = {} if address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False, **extra)
        except (ConnectionError, ValueError, RuntimeError, OSError) as e:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
            raise ConfigError(f"could not connect to {where}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") \
                from None
        return ray

    def workers(self, ray) -> int:
        if self.settings.workers:
            return self.settings.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1) // max(self.cpus, 1e-9)))

    def run(self, stage, ctx, todo: list) -> None:
        """Process ``todo`` (longest first) and write each item's part as it arrives. A worker that
        died is replaced at once; its item waits out its backoff without holding the others (the
        driver never sleeps while items are in flight)."""
        if not todo:
            return
        ray = self.connect()
        order = sorted(todo, key=lambda item: -stage.size(ctx, item))  # stable: ties keep the stage's order
        actor = ray.remote(StageWorker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)
        pool = Pool(ray, actor, stage, ctx, min(self.workers(ray), len(order)))
        queue = deque((item, 0) for item in order)
        retries: list = []  # (not before, item, attempt): items whose worker died, waiting out their backoff
        idle: deque = deque()  # slots whose actor is up and has nothing in flight
        bar = progress(total=len(order), desc=f"{stage.spec.command} [ray, {pool.size} workers]", unit=stage.unit)
        lost = []  # (item, why) of items whose worker died every time
        try:
            while queue or retries or pool.pending:
                now = time.monotonic()
                for due in sorted((r for r in retries if r[0] <= now), key=lambda r: r[0], reverse=True):
                    retries.remove(due)
                    queue.appendleft(due[1:])  # a retried item goes first: it was started first
                while idle and queue:
                    pool.submit(idle.popleft(), *queue.popleft())
                if not pool.busy:  # only retries left, all waiting: nothing else to do meanwhile
                    time.sleep(max(0.0, min(r[0] for r in retries) - now))
                    continue
                wake = min((r[0] for r in retries), default=None)
                got = pool.next(None if wake is None else max(0.0, wake - now))
                if got is None:  # a retry is due before anything finished
                    continue
                slot, item, attempt, outcome = got
                if attempt is None:  # the slot's actor has started
                    idle.append(slot)
                elif isinstance(outcome, BaseException):  # the worker died: a fault, not the item's
                    pool.replace(slot)
                    if attempt < self.settings.max_retries:
                        retries.append((time.monotonic() + min(30.0, 0.5 * 2 ** attempt), item, attempt + 1))
                    else:
                        lost.append((item, f"its worker died {attempt + 1} times (last: {death(outcome)})"))
                        bar.update()
                else:
                    stage.record(ctx, item, outcome)
                    bar.update()
                    if pool.done[slot] >= self.settings.recycle_after:
                        pool.replace(slot)
                    else:
                        idle.append(slot)
        finally:
            bar.close()
            pool.close()
        self.settle(stage, ctx, lost)

    @staticmethod
    def settle(stage, ctx, lost: list) -> None:
        """Record each lost item as failed where the stage can (its part), else stop naming them."""
        unrecorded = []
        for item, why in lost:
            part = stage.lost_part(ctx, item, why)
            if part is None:
                unrecorded.append(f"{stage.item_name(item)} ({why})")
            else:
                stage.record(ctx, item, part)
        if unrecorded:
            raise ExecutorError(f"{stage.spec.command}: {len(unrecorded)} {stage.unit}(s) not done, the others are: "
                                + "; ".join(unrecorded))


class Pool:
    """Ray actors by slot, the one call in flight on each, and how many items each has done. A slot
    takes items only once its actor has started (its ``pid`` call answered): the longest item goes
    to the first worker that is up, not to one still importing."""

    def __init__(self, ray, actor, stage, ctx, size: int):
        self.ray, self.actor, self.stage, self.ctx, self.size = ray, actor, stage, ctx, size
        self.actors: list = [None] * size
        self.done = [0] * size
        self.pending: dict = {}  # object ref → (slot, item, attempt)
        self.starting: dict = {}  # object ref of a new actor's pid() → slot
        self.failed_starts = 0
        for slot in range(size):
            self.start(slot)

    def start(self, slot: int) -> None:
        self.actors[slot], self.done[slot] = self.actor.remote(self.stage, self.ctx), 0
        self.starting[self.actors[slot].pid.remote()] = slot

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.starting)

    def submit(self, slot: int, item, attempt: int) -> None:
        self.pending[self.actors[slot].process.remote(item)] = (slot, item, attempt)

    def next(self, timeout: float | None = None):
        """(slot, item, attempt, part or the error that killed the worker) of the next item to finish;
        (slot, None, None, None) when a worker has started; None when nothing happened within
        ``timeout`` seconds. An error the stage raised itself is raised here, as its own exception."""
        ready, _ = self.ray.wait([*self.pending, *self.starting], num_returns=1, timeout=timeout)
        if not ready:
            return None
        if ready[0] in self.starting:
            slot = self.starting.pop(ready[0])
            try:
                self.ray.get(ready[0])
            except self.ray.exceptions.RayError as e:  # a worker that dies while starting: another one
                self.failed_starts += 1
                if self.failed_starts > 3 * self.size:
                    raise ExecutorError(f"Ray workers do not start ({self.failed_starts} tries; last: {death(e)})") \
                        from None
                self.replace(slot)
                return self.next(timeout)
            return slot, None, None, None
        slot, item, attempt = self.pending.pop(ready[0])
        try:
            part = self.ray.get(ready[0])
        except self.ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError,
                self.ray.exceptions.ObjectLostError) as e:
            return slot, item, attempt, e
        self.done[slot] += 1
        return slot, item, attempt, part

    def replace(self, slot: int) -> None:
        """A new actor in the slot (the old one killed); the slot takes items once it has started."""
        self.ray.kill(self.actors[slot], no_restart=True)
        self.start(slot)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a, no_restart=True)


def recorded_cluster(ray, address: str | None) -> str | None:
    """The address of the cluster ``ray start`` recorded on this machine (what ``ray.init()`` would
    join), or None where there is none (then a local one is started). ``auto`` requires one."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # another Ray layout: let ray.init find it
        return address
    try:
        return get_ray_address_from_environment(address, None)
    except ConnectionError as e:
        raise ConfigError(f"--ray-address auto: {str(e).splitlines()[0]}") from None

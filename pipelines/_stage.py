"""What every stage shares: its folder, DONE.json, and which movies this process handles."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movies2scenes import __version__
from movies2scenes.config import ConfigError
from movies2scenes.store import read_json, write_json


@dataclass(frozen=True)
class Slot:
    """This process's share of a data-parallel stage: items with ``index % world == rank``."""

    rank: int = 0
    world: int = 1
    state: Any = None  # accelerate.PartialState under `accelerate launch`/torchrun, else None

    def mine(self, index: int) -> bool:
        return index % self.world == self.rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def process_slot(shard: str | None = None) -> Slot:
    """``--shard i/n`` (job arrays) wins; else Accelerate's process index when launched by
    ``accelerate launch``/torchrun (WORLD_SIZE > 1); else a single process."""
    if shard:
        rank, world = parse_shard(shard)
        return Slot(rank, world)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=True)
        return Slot(state.process_index, state.num_processes, state)
    return Slot()


def done_record(stage_dir: Path) -> dict | None:
    path = stage_dir / "DONE.json"
    return read_json(path) if path.is_file() else None


def is_done(stage_dir: Path, config_hash: str, input_hash: str) -> bool:
    rec = done_record(stage_dir)
    return bool(rec) and rec.get("config_hash") == config_hash and rec.get("input_hash") == input_hash


def write_done(stage_dir: Path, stage: str, config_hash: str, input_hash: str,
               counts: dict, started: float, **extra) -> dict:
    rec = {
        "stage": stage,
        "config_hash": config_hash,
        "input_hash": input_hash,
        "counts": counts,
        "elapsed_s": round(time.time() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "movies2scenes": __version__,
        "python": platform.python_version(),
        **extra,
    }
    write_json(stage_dir / "DONE.json", rec)
    return rec

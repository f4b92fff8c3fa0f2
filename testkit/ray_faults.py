"""Faults for the Ray executor's checks: SIGKILL a Ray worker while it processes an item."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_a_busy_worker(parts: Path, killed: list[int], after_parts: int = 1, timeout: float = 600) -> None:
    """Once ``parts`` holds ``after_parts`` part records, SIGKILL one Ray worker that is running an
    item (process title ``ray::StageWorker.process``); its pid goes to ``killed``. Meant for a thread
    beside the stage; gives up after ``timeout`` seconds (``killed`` then stays empty)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not killed:
        if parts.is_dir() and len(list(parts.iterdir())) >= after_parts:
            found = subprocess.run(["pgrep", "-f", "ray::StageWorker.process"], capture_output=True, text=True)
            pids = [int(p) for p in found.stdout.split()]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
        time.sleep(0.05)


def _doomed_stage():
    from movies2scenes.stages.detect_shots import DetectShots

    class DoomedDetectShots(DetectShots):
        """detect-shots whose worker process exits hard on one movie, every time (a video that
        crashes its decoder): the executor's lost-item path."""

        doomed = ""

        def process_item(self, ctx, movie):
            if movie.movie_id == self.doomed:
                os._exit(1)
            return super().process_item(ctx, movie)

    DoomedDetectShots.__module__, DoomedDetectShots.__qualname__ = __name__, "DoomedDetectShots"
    return DoomedDetectShots


DoomedDetectShots = _doomed_stage()

"""Progress of long work: a tqdm bar on a terminal, plain timestamped lines everywhere else.

Under SLURM, nohup, CI or ``| tee`` stderr is not a terminal and a tqdm bar either draws nothing
(``disable=None``) or floods the log with carriage returns. :func:`progress` returns tqdm when
stderr is a terminal and otherwise a :class:`LineProgress` with the same small interface
(``update``, ``set_postfix``, ``close``, iteration), which prints one line at the first update,
then at most every ``M2S_PROGRESS_INTERVAL`` seconds (default 30), and a last line at the end::

    2026-11-23 10:02:03 shot encoder: 120/500 step (24%) | loss=3.214 acc1=0.41 | 5.1 step/s | elapsed 0:00:23 | ETA 0:01:15
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from typing import Iterable, Iterator

DEFAULT_INTERVAL = 30.0


def interval_from_env() -> float:
    raw = os.environ.get("M2S_PROGRESS_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        print(f"movies2scenes: M2S_PROGRESS_INTERVAL={raw!r} is not a number of seconds; using "
              f"{DEFAULT_INTERVAL:g}", file=sys.stderr)
        return DEFAULT_INTERVAL
    return max(0.0, value)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0, seconds))))


class LineProgress:
    """Plain progress lines (see module doc); a disabled one prints nothing."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, interval: float | None = None,
                 file=None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.initial, self.disable = initial, disable
        self.interval = interval_from_env() if interval is None else interval
        self.file = file
        self.postfix: dict[str, object] = {}
        self.start = time.monotonic()
        self.last_print: float | None = None
        self.printed_n = None

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.last_print is None or now - self.last_print >= self.interval:
            self._print(now)

    def write(self, message: str, file=None) -> None:
        print(message, file=file or self.file or sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
                 + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        return time.strftime("%Y-%m-%d %H:%M:%S ") + " | ".join(parts)

    def _print(self, now: float) -> None:
        if self.disable:
            return
        self.last_print, self.printed_n = now, self.n
        print(self.line(now), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.printed_n != self.n and self.n != self.initial:
            self._print(time.monotonic())
        self.printed_n = self.n


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, disable: bool = False, position: int = 0):
    """A tqdm bar when stderr is a terminal, else :class:`LineProgress` (see module doc)."""
    stream = sys.stderr
    if not disable and hasattr(stream, "isatty") and stream.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, position=position,
                    dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable)

"""Evaluation task CSVs: one clip per row — ``task, kind, movie_id, start_shot, end_shot, label,
split``. ``kind`` is classification (label = class name), regression (label = number), multilabel
(labels ``|``-joined) or binary (label 0/1); ``split`` is the probe's train / val / test; a clip is
shots [start_shot, end_shot) of a movie of the run's shots stage. :func:`read_tasks` reports every
bad row as ``file:row: reason``."""

from __future__ import annotations

import math
from pathlib import Path

from .catalogue import CsvReader, open_text, utf8_problem
from .config import ConfigError

COLUMNS = ["task", "kind", "movie_id", "start_shot", "end_shot", "label", "split"]
KINDS = ("classification", "regression", "multilabel", "binary")


def read_tasks(files: list[str], num_shots: dict[str, int]) -> dict[str, list[dict]]:
    """Task name → rows, validated; every problem is reported as ``file:row: reason``."""
    tasks: dict[str, list[dict]] = {}
    problems: list[str] = []
    for f in files:
        path = Path(f)
        if not path.exists():
            raise ConfigError(f"evaluate.tasks: {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"evaluate.tasks: {path} is not a regular file")
        try:
            _read_task_file(path, num_shots, tasks, problems)
        except UnicodeDecodeError:
            raise ConfigError(utf8_problem(path)) from None
    for name, rows in tasks.items():
        if rows[0]["kind"] == "multilabel" and not any(t for r in rows for t in r["label"].split("|")):
            problems.append(f"task {name!r}: every row has an empty label set (nothing to learn or score)")
    if problems:
        raise ConfigError("bad task rows:\n  " + "\n  ".join(problems))
    return tasks


def _read_task_file(path: Path, num_shots: dict[str, int], tasks: dict[str, list[dict]], problems: list[str]) -> None:
    with open_text(path) as fh:
        reader = CsvReader(path, fh)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for r in reader:
            where = f"{path}:{reader.line_num}"
            if None in r.values():
                problems.append(f"{where}: fewer fields than the header has ({len(COLUMNS)} columns expected)")
                continue
            if None in r:
                problems.append(f"{where}: more fields than the header has")
                continue
            try:
                start, end = int(r["start_shot"]), int(r["end_shot"])
            except ValueError:
                problems.append(f"{where}: start_shot/end_shot must be integers")
                continue
            if r["kind"] not in KINDS:
                problems.append(f"{where}: kind {r['kind']!r} is not one of {', '.join(KINDS)}")
            elif r["split"] not in ("train", "val", "test"):
                problems.append(f"{where}: split {r['split']!r} is not train, val or test")
            elif r["movie_id"] not in num_shots:
                problems.append(f"{where}: movie {r['movie_id']!r} has no shots in this run")
            elif not 0 <= start < end <= num_shots[r["movie_id"]]:
                problems.append(f"{where}: shots [{start}, {end}) outside movie {r['movie_id']!r} "
                                f"({num_shots[r['movie_id']]} shots)")
            elif r["kind"] == "regression" and not _is_number(r["label"]):
                problems.append(f"{where}: regression label {r['label']!r} is not a finite number")
            elif r["kind"] == "binary" and r["label"] not in ("0", "1"):
                problems.append(f"{where}: binary label {r['label']!r} is not 0 or 1")
            else:
                rows = tasks.setdefault(r["task"], [])
                if rows and rows[0]["kind"] != r["kind"]:
                    problems.append(f"{where}: task {r['task']!r} mixes kinds {rows[0]['kind']} and {r['kind']}")
                    continue
                rows.append({**r, "start_shot": start, "end_shot": end})


def _is_number(text: str) -> bool:
    """A finite number (NaN/inf labels would make every metric NaN)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False

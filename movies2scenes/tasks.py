"""Evaluation task CSVs: one clip per row — ``task, kind, movie_id, start_shot, end_shot, label``,
optionally ``shots`` and ``split``. ``kind`` is classification (label = class name), regression
(label = number), multilabel (labels ``|``-joined) or binary (label 0/1). A clip is shots
[start_shot, end_shot) of a movie of the run's shots stage, in order — or, where the optional
``shots`` column is filled, exactly the listed shots in the listed order (space-separated shot
numbers, e.g. ``12 11 10 9``: a window reversed; each shot once; ``start_shot``/``end_shot`` may
then be empty, else they must span the listed shots). ``split`` (train / val / test) is read and
checked for older files but not used: the probes cross-validate by movie (``movies2scenes.eval``).
:func:`read_tasks` reports every bad row as ``file:row: reason``; each row comes back with its
``shots`` as a tuple."""

from __future__ import annotations

import math
from pathlib import Path

from .catalogue import CsvReader, open_text, utf8_problem
from .errors import ConfigError

COLUMNS = ["task", "kind", "movie_id", "start_shot", "end_shot", "label"]  # required; "shots", "split" optional
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
            window = _window(r, num_shots.get(r["movie_id"]))
            if isinstance(window, str):
                problems.append(f"{where}: {window}")
                continue
            if r["kind"] not in KINDS:
                problems.append(f"{where}: kind {r['kind']!r} is not one of {', '.join(KINDS)}")
            elif (r.get("split") or "") not in ("", "train", "val", "test"):
                problems.append(f"{where}: split {r['split']!r} is not train, val or test")
            elif r["kind"] == "regression" and not _is_number(r["label"]):
                problems.append(f"{where}: regression label {r['label']!r} is not a finite number")
            elif r["kind"] == "binary" and r["label"] not in ("0", "1"):
                problems.append(f"{where}: binary label {r['label']!r} is not 0 or 1")
            else:
                rows = tasks.setdefault(r["task"], [])
                if rows and rows[0]["kind"] != r["kind"]:
                    problems.append(f"{where}: task {r['task']!r} mixes kinds {rows[0]['kind']} and {r['kind']}")
                    continue
                rows.append({**r, "start_shot": min(window), "end_shot": max(window) + 1, "shots": window})


def _is_number(text: str) -> bool:
    """A finite number (NaN/inf labels would make every metric NaN)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _window(r: dict, num_shots: int | None) -> tuple[int, ...] | str:
    """The row's shots in order, or what is wrong with them."""
    movie, listed = r["movie_id"], r.get("shots")
    if num_shots is None:
        return f"movie {movie!r} has no shots in this run"
    span = (r["start_shot"].strip(), r["end_shot"].strip())
    if listed is None or listed == "":
        try:
            start, end = int(span[0]), int(span[1])
        except ValueError:
            return ("start_shot/end_shot must be integers" if listed is None or any(span)
                    else "no shots: give start_shot and end_shot, or the shots column")
        if not 0 <= start < end <= num_shots:
            return f"shots [{start}, {end}) outside movie {movie!r} ({num_shots} shots)"
        return tuple(range(start, end))
    try:
        shots = tuple(int(t) for t in listed.split())
    except ValueError:
        return f"shots {listed!r} is not a space-separated list of shot numbers"
    if not shots:
        return "shots is empty (list the clip's shot numbers, e.g. '12 11 10 9')"
    bad = [t for t in shots if not 0 <= t < num_shots]
    if bad:
        return f"shot {bad[0]} outside movie {movie!r} ({num_shots} shots: 0..{num_shots - 1})"
    repeated = sorted({t for t in shots if shots.count(t) > 1})
    if repeated:
        return f"shot {repeated[0]} is listed more than once in shots {listed!r}"
    if any(span):
        try:
            start, end = int(span[0]), int(span[1])
        except ValueError:
            return "start_shot/end_shot must be integers or both empty when shots is given"
        if (start, end) != (min(shots), max(shots) + 1):
            return (f"start_shot/end_shot [{start}, {end}) do not span shots {listed!r} "
                    f"([{min(shots)}, {max(shots) + 1}); leave them empty or make them agree)")
    return shots

"""The movie catalogue and watch logs: reading, validation, and building one from a folder.

Catalogue: CSV or JSONL with columns ``movie_id, video`` and optional ``title, genres, synopsis,
split``. ``genres`` is ``|``-separated in CSV (a list or a ``|`` string in JSONL); ``split`` is one of
train/val/test/exclude/eval (default train; eval = evaluation only, never
pretraining and never a training monitor's probe movie). Relative video paths are relative to the catalogue file.

Watch logs: CSV ``user_id, movie_id, timestamp``; the timestamp is Unix seconds or ISO 8601.

Every problem is reported as ``file:row: reason`` (row = line number in the file, header = 1);
all problems of a file are collected before :class:`CatalogueError` is raised.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import CatalogueError  # noqa: F401  (movies2scenes.catalogue.CatalogueError keeps working)

# eval: evaluation only (issue 39) — never pretraining, never a training monitor's probe movie
SPLITS = ("train", "val", "test", "exclude", "eval")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                    ".wmv", ".ogv", ".ogg", ".mxf", ".flv", ".3gp", ".3g2", ".vob", ".divx", ".y4m")


@dataclass(frozen=True)
class Movie:
    movie_id: str
    video: Path
    title: str = ""
    genres: tuple[str, ...] = ()
    synopsis: str = ""
    split: str = "train"


@dataclass
class Catalogue:
    path: Path
    movies: list[Movie] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.movies)

    def __iter__(self):
        return iter(self.movies)

    def ids(self) -> list[str]:
        return [m.movie_id for m in self.movies]


def video_fingerprints(movies) -> dict[str, str]:
    """movie id → its video's content fingerprint (``store.file_fingerprint``), or ``missing`` /
    ``not-a-regular-file``; never blocks (a FIFO or device is not opened)."""
    from .store import file_fingerprint

    out = {}
    for m in movies:
        try:
            out[m.movie_id] = file_fingerprint(m.video)
        except ValueError:
            out[m.movie_id] = "not-a-regular-file"
        except OSError:
            out[m.movie_id] = "missing"
    return out


def duplicate_videos(prints: dict[str, str]) -> dict[str, str]:
    """Movies whose video is another movie's: ``prints`` maps movie id → content fingerprint
    (``store.file_fingerprint``: size + first and last 64 KiB, so one file under two paths, a link
    or a byte copy all match); returns each later id (sorted) → the first id with that video.
    Fingerprints that are not of a readable file (``missing``, ...) never match."""
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for movie_id in sorted(prints):
        fp = prints[movie_id]
        if not re.fullmatch(r"[0-9a-f]{16}", fp or ""):
            continue
        if fp in first:
            out[movie_id] = first[fp]
        else:
            first[fp] = movie_id
    return out


def safe_name(movie_id: str, max_len: int = 64, empty: str = "movie") -> str:
    """A file-name- and webdataset-key-safe form of ``movie_id`` — or of any name a user gives that
    reaches the file system (task names: ``eval_report.keep_previous``); names are data, never paths.

    Keeps ``[A-Za-z0-9_-]``; anything else becomes ``_`` (so never ``/``, ``..`` or an absolute
    path), at most ``max_len`` characters. When that changed the name (or it had to be shortened) a
    short hash of the original is appended, so distinct names stay distinct; ``empty`` stands for a
    name with no safe character.
    """
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", movie_id).strip("_-") or empty
    if clean == movie_id and len(clean) <= max_len:
        return clean
    digest = hashlib.sha1(movie_id.encode("utf-8")).hexdigest()[:8]
    return f"{clean[: max_len - 9]}-{digest}"


def _split_genres(value) -> tuple[str, ...]:
    """A ``|``-separated string or a list of strings (JSONL); ValueError for anything else."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = value.split("|")
    elif isinstance(value, list) and all(isinstance(g, str) for g in value):
        items = value
    else:
        raise ValueError(f"genres must be a '|'-separated string or a list of strings, got {json.dumps(value)[:80]}")
    return tuple(g.strip() for g in items if g.strip())


def utf8_problem(path: Path) -> str:
    """``file:line: reason`` for the first line of ``path`` that is not UTF-8 (read in binary)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}:{lineno}: not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                        "save the file as UTF-8")
    return f"{path}: not UTF-8 text"


def open_text(path: Path):
    """A text file opened for reading as UTF-8, with or without a byte-order mark (Excel's "CSV
    UTF-8" writes one). Decoding errors surface while reading: catch UnicodeDecodeError and report
    :func:`utf8_problem`."""
    return open(path, encoding="utf-8-sig", newline="")


CSV_FIELD_LIMIT = 16 << 20  # bytes per field (Python's default, 128 KiB, refuses a long synopsis)


class CsvReader(csv.DictReader):
    """``csv.DictReader`` over an :func:`open_text` file whose errors (a field over 16 MiB, a NUL
    byte, an unterminated quote) are a :class:`CatalogueError` naming the file and line."""

    def __init__(self, path: Path, f):
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        super().__init__(f)
        self.path = path

    def _problem(self, e: csv.Error) -> CatalogueError:
        why = str(e)
        if "field larger than field limit" in why:
            why = f"a field is longer than {CSV_FIELD_LIMIT >> 20} MiB"
        return CatalogueError([f"{self.path}:{max(1, self.line_num)}: not a readable CSV row ({why})"])

    @property
    def fieldnames(self):
        try:
            return super().fieldnames
        except csv.Error as e:
            raise self._problem(e) from None

    @fieldnames.setter
    def fieldnames(self, value):
        self._fieldnames = value

    def __next__(self):
        try:
            return super().__next__()
        except csv.Error as e:
            raise self._problem(e) from None


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row dict) for a CSV or JSONL file."""
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CatalogueError([f"{path}:{lineno}: not valid JSON ({e.msg})"]) from None
                if not isinstance(row, dict):
                    raise CatalogueError([f"{path}:{lineno}: expected a JSON object per line"])
                rows.append((lineno, row))
        return rows
    with open_text(path) as f:
        reader = CsvReader(path, f)
        if reader.fieldnames is None:
            raise CatalogueError([f"{path}:1: empty file (expected a header row)"])
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise CatalogueError([f"{path}:{reader.line_num}: more fields than the header has"])
            rows.append((reader.line_num, row))
        return rows


def load_catalogue(path: str | Path, require_videos: bool = False) -> Catalogue:
    """Read and validate a catalogue. Missing video files are problems only if ``require_videos``
    (the shots stage records them per movie in ``failures.jsonl`` instead)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError([f"{path}: catalogue file not found"])
    try:
        rows = _read_rows(path)
    except UnicodeDecodeError:
        raise CatalogueError([utf8_problem(path)]) from None
    problems: list[str] = []
    movies: list[Movie] = []
    seen: dict[str, int] = {}
    files: dict[str, tuple[str, int]] = {}
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        missing = [c for c in ("movie_id", "video") if not str(row.get(c) or "").strip()]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        movie_id = str(row["movie_id"]).strip()
        if movie_id in seen:
            problems.append(f"{where}: duplicate movie_id {movie_id!r} (first on row {seen[movie_id]})")
            continue
        seen[movie_id] = lineno
        folded = safe_name(movie_id).casefold()  # per-movie files are named by the id
        if folded in files:
            problems.append(f"{where}: movie_id {movie_id!r} and {files[folded][0]!r} (row {files[folded][1]}) "
                            "name the same files on a case-insensitive file system; make them differ "
                            "by more than case")
            continue
        files[folded] = (movie_id, lineno)
        split = str(row.get("split") or "train").strip()
        if split not in SPLITS:
            problems.append(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            continue
        video = Path(str(row["video"]))
        if not video.is_absolute():
            video = path.parent / video
        if require_videos and not video.is_file():
            problems.append(f"{where}: video file not found: {video}")
            continue
        try:
            genres = _split_genres(row.get("genres"))
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        movies.append(
            Movie(
                movie_id=movie_id,
                video=video,
                title=str(row.get("title") or ""),
                genres=genres,
                synopsis=str(row.get("synopsis") or ""),
                split=split,
            )
        )
    if problems:
        raise CatalogueError(problems)
    if not movies:
        raise CatalogueError([f"{path}: the catalogue lists no movies"])
    return Catalogue(path=path, movies=movies)


def parse_timestamp(value: str) -> float:
    """Unix seconds (int/float) or ISO 8601 (naive = UTC) → Unix seconds. ValueError otherwise."""
    value = value.strip()
    try:
        t = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(t):  # nan, inf, and overflowing numbers such as 1e400
            raise ValueError(f"timestamp {value!r} is not a finite number")
        return t
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@dataclass(frozen=True)
class WatchLog:
    user_id: list[str]
    movie_id: list[str]
    timestamp: list[float]

    def __len__(self) -> int:
        return len(self.user_id)


def load_watch_logs(path: str | Path, movie_ids: set[str] | list[str]) -> WatchLog:
    """Read and validate watch logs against the catalogue's movie ids."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError([f"{path}: watch-log file not found"])
    known = set(movie_ids)
    try:
        with open_text(path) as f:
            return _read_watch_logs(path, f, known)
    except UnicodeDecodeError:
        raise CatalogueError([utf8_problem(path)]) from None


def _read_watch_logs(path: Path, f, known: set[str]) -> WatchLog:
    problems: list[str] = []
    users, movies, times = [], [], []
    for user, movie, t in _watch_rows(path, f, known, problems):
        users.append(user)
        movies.append(movie)
        times.append(t)
    if problems:
        raise CatalogueError(problems)
    return WatchLog(users, movies, times)


def _watch_rows(path: Path, f, known: set[str], problems: list[str], limit: int = 0):
    """The valid (user, movie, Unix seconds) rows of a watch-log CSV, in file order; every invalid
    row adds ``file:line: reason`` to ``problems`` (at most ``limit`` of them, then a count)."""
    reader = CsvReader(path, f)
    header = reader.fieldnames or []
    lacking = [c for c in ("user_id", "movie_id", "timestamp") if c not in header]
    if lacking:
        raise CatalogueError([f"{path}:1: header lacks column(s) {', '.join(lacking)}"])
    more = 0

    def problem(text: str) -> None:
        nonlocal more
        if limit and len(problems) >= limit:
            more += 1
        else:
            problems.append(text)

    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            problem(f"{where}: more fields than the header has")
            continue
        user, movie, ts = (str(row[c] or "").strip() for c in ("user_id", "movie_id", "timestamp"))
        if not user:
            problem(f"{where}: empty user_id")
            continue
        if movie not in known:
            problem(f"{where}: unknown movie_id {movie!r} (not in the catalogue)")
            continue
        try:
            t = parse_timestamp(ts)
        except ValueError:
            problem(f"{where}: bad timestamp {ts!r} (expected Unix seconds or ISO 8601)")
            continue
        yield user, movie, t
    if more:
        problems.append(f"{path}: ... and {more} more problem row(s)")


def watch_log_problems(path: str | Path, known: set[str], limit: int = 100, header_only: bool = False) -> list[str]:
    """Every problem of a watch-log CSV as ``file:line: reason`` (the first ``limit``, then a count),
    reading it as a stream (memory does not grow with the file). ``header_only``: check only that it
    is UTF-8 with the needed columns."""
    path = Path(path)
    problems: list[str] = []
    try:
        with open_text(path) as f:
            rows = _watch_rows(path, f, known, problems, limit)
            if header_only:
                next(iter(rows), None)  # reads the header (and the first row)
                return []
            for _ in rows:
                pass
    except CatalogueError as e:
        return list(e.problems)
    except UnicodeDecodeError:
        return [utf8_problem(path)]
    return problems


def catalogue_from_folder(videos: str | Path, out: str | Path) -> Catalogue:
    """Write a catalogue (CSV or JSONL by ``out``'s suffix) listing every video under ``videos``.

    Ids come from file names (sanitised, unique); paths are written relative to ``out``'s folder
    when possible. Returns the catalogue as read back."""
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise CatalogueError([f"{videos}: not a directory"])
    files = sorted(p for p in videos.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not files:
        raise CatalogueError([f"{videos}: no video files ({', '.join(VIDEO_EXTENSIONS)})"])
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for p in files:
        base = safe_name(p.stem)
        movie_id, n = base, 1
        while movie_id in used:
            n += 1
            movie_id = f"{base}-{n}"
        used.add(movie_id)
        try:
            rel = p.resolve().relative_to(out.parent.resolve())
        except ValueError:
            rel = p.resolve()
        rows.append({"movie_id": movie_id, "video": str(rel), "title": p.stem, "split": "train"})
    from .store import atomic_path

    with atomic_path(out) as tmp:
        if out.suffix.lower() in (".jsonl", ".json"):
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            with tmp.open("w", encoding="utf-8", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    return load_catalogue(out)


def catalogue_genres(catalogue: str | Path | None) -> dict[str, set[str]]:
    """Genres per movie of a catalogue file, if one is given and has genres (else {})."""
    if not catalogue or not Path(catalogue).is_file():
        return {}
    genres = {m.movie_id: set(m.genres) for m in load_catalogue(catalogue)}
    return genres if any(genres.values()) else {}


def eval_only_movies(catalogue: str | Path | None) -> set[str]:
    """The ids of the catalogue's ``eval``-split movies (none without a catalogue)."""
    if not catalogue or not Path(catalogue).is_file():
        return set()
    return {m.movie_id for m in load_catalogue(catalogue) if m.split == "eval"}

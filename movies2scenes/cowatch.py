"""Co-watch pairs from watch logs of any size: DuckDB over the CSV or Parquet file, out of core.

The same rule as ``testkit.oracles.cowatch_pairs`` (the in-memory reference the tests and
``bench/scale.py`` check it against): per user in time order (file order breaks ties), each movie's followers
among the next ``lookahead`` watches are counted, over events of allowed movies only, with exact
duplicate rows (user, movie, timestamp) counted once; each movie keeps its ``per_movie`` most
frequent followers (ties: smaller id first). Here DuckDB does it in SQL, spilling to
``temp_dir`` beyond ``memory_limit``, so 10⁸ events need neither 10⁸ Python objects nor the RAM
to hold them (bench/scale.py measures it).

Validation is a SQL gate over every row (user non-empty, movie in the catalogue, timestamp Unix
seconds or ISO 8601, finite). When the gate finds a problem, or DuckDB cannot read a CSV file at
all, the messages come from the streaming Python validator
(:func:`movies2scenes.catalogue.watch_log_problems`), which names ``file:line: reason`` exactly as
before; Parquet rows are named ``file:row N``.
"""

from __future__ import annotations

import sys

from pathlib import Path

from .catalogue import watch_log_problems
from .errors import CatalogueError
from .similarity import Pairs

MAX_MESSAGES = 100  # the first 100 problems are named, then a count of the rest


def _connect(memory_limit: str, temp_dir: str | Path | None, threads: int):
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # stdout is ours (and a pipe under SLURM)
    con.execute("SET TimeZone = 'UTC'")  # naive ISO timestamps are UTC, as in parse_timestamp
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = true")  # row_number() OVER () is file order
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_dir:
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = '{Path(temp_dir).as_posix()}'")
    return con


def _id_table(con, name: str, ids: set[str]) -> None:
    """A temp table ``name(m)`` of ids, loaded through Arrow (``executemany`` inserts row by row)."""
    import pyarrow as pa

    con.register(f"{name}_arrow", pa.table({"m": pa.array(sorted(ids), pa.string())}))
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT m FROM {name}_arrow").fetchall()
    con.unregister(f"{name}_arrow")


PARSE = ("coalesce(TRY_CAST(t_text AS DOUBLE), "
         "epoch(TRY_CAST(replace(t_text, 'Z', '+00:00') AS TIMESTAMPTZ)))")  # Unix seconds, else ISO 8601


def _source(con, path: Path, is_csv: bool, strict: bool = True) -> str:
    """A SQL relation (i, u, m, t_text, t): file-order row number, trimmed ids, the timestamp as
    text and as Unix seconds (NULL where it does not parse). ``strict=False`` only for a CSV that
    the row-by-row reader found valid (DuckDB's strict sniffer refuses e.g. mixed CRLF/LF lines)."""
    p = str(path).replace("'", "''")
    if is_csv:
        src = (f"read_csv('{p}', header = true, all_varchar = true, strict_mode = {str(strict).lower()}, "
               "delim = ',', quote = '\"', escape = '\"')")
        t_native = "NULL"
    else:
        src = f"read_parquet('{p}')"
        cols = {r[0]: r[1].upper() for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        lacking = [c for c in ("user_id", "movie_id", "timestamp") if c not in cols]
        if lacking:
            raise CatalogueError([f"{path}: Parquet schema lacks column(s) {', '.join(lacking)}"])
        typed = cols["timestamp"].startswith("TIMESTAMP") or cols["timestamp"] == "DATE"
        t_native = "epoch(CAST(\"timestamp\" AS TIMESTAMPTZ))" if typed else "NULL"  # numbers parse as text
    return (f"(SELECT i, u, m, t_text, coalesce({t_native}, {PARSE}) AS t FROM "
            f"(SELECT row_number() OVER () AS i, trim(CAST(user_id AS VARCHAR)) AS u, "
            f"trim(CAST(movie_id AS VARCHAR)) AS m, trim(CAST(\"timestamp\" AS VARCHAR)) AS t_text, "
            f"\"timestamp\" FROM {src}))")


def _events_table(con, path: Path, is_csv: bool, strict: bool) -> list[tuple]:
    """Table ``ev`` of the file's rows; the first invalid rows (at most MAX_MESSAGES + 1)."""
    con.execute("DROP TABLE IF EXISTS ev")
    con.execute(f"CREATE TEMP TABLE ev AS SELECT * FROM {_source(con, path, is_csv, strict)}").fetchall()
    return con.execute(
        "SELECT i, u, m, t_text, t FROM ev WHERE u IS NULL OR u = '' OR m NOT IN (SELECT m FROM known) "
        "OR m IS NULL OR t IS NULL OR NOT isfinite(t) ORDER BY i LIMIT ?", [MAX_MESSAGES + 1]).fetchall()


def _load_events(con, path: Path, known: set[str]) -> int:
    """Table ``ev`` (i, u, m, t_text, t) of every row of the watch-log file, after the row checks
    (:class:`CatalogueError` naming rows otherwise); returns the number of rows."""
    import duckdb

    if not path.is_file():
        raise CatalogueError([f"{path}: watch-log file not found"])
    is_csv = path.suffix.lower() not in (".parquet", ".pq")
    if is_csv:
        problems = watch_log_problems(path, known, limit=MAX_MESSAGES, header_only=True)
        if problems:
            raise CatalogueError(problems)
    _id_table(con, "known", known)
    try:
        bad = _events_table(con, path, is_csv, strict=True)
    except duckdb.Error as e:
        if not is_csv:
            raise CatalogueError([f"{path}: cannot read the watch logs: {str(e).splitlines()[0]}"]) from None
        # let the reference validator name the line (ragged rows, bad UTF-8, ...); a file it finds
        # valid row by row is read without DuckDB's strict dialect check (mixed CRLF/LF line endings)
        problems = watch_log_problems(path, known, limit=MAX_MESSAGES)
        if problems:
            raise CatalogueError(problems) from None
        try:
            bad = _events_table(con, path, is_csv, strict=False)
        except duckdb.Error as e2:
            raise CatalogueError([f"{path}: cannot read the watch logs: {str(e2).splitlines()[0]}"]) from None
    if bad:
        if is_csv:
            problems = watch_log_problems(path, known, limit=MAX_MESSAGES)
            if problems:
                raise CatalogueError(problems)
        raise CatalogueError([f"{path}:{'' if is_csv else 'row '}{i + (1 if is_csv else 0)}: "
                              + ("empty user_id" if not u else f"unknown movie_id {m!r} (not in the catalogue)"
                                 if m not in known else f"bad timestamp {tt!r} (expected Unix seconds or ISO 8601)")
                              for i, u, m, tt, _ in bad[:MAX_MESSAGES]])
    _warn_date_like(con, path, is_csv)
    return int(con.execute("SELECT count(*) FROM ev").fetchall()[0][0])


def _warn_date_like(con, path: Path, is_csv: bool) -> None:
    """Timestamps such as 20240101 are valid Unix seconds (1970-08-23) but almost surely dates in
    YYYYMMDD: say so (they are still read as seconds)."""
    n, first, text = con.execute(
        "SELECT count(*), min(i), arg_min(t_text, i) FROM ev WHERE t BETWEEN 19000101 AND 20991231 "  # cheap first
        "AND regexp_full_match(t_text, '(19|20)[0-9]{2}"
        "(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])')").fetchall()[0]
    if n:
        where = f"{path}:{first + 1}" if is_csv else f"{path} row {first}"
        print(f"warning: {where}: {n} timestamp(s) look like YYYYMMDD dates (e.g. {text!r}) but are read as Unix "
              f"seconds (1970); write dates as ISO 8601 (e.g. {text[:4]}-{text[4:6]}-{text[6:]})", file=sys.stderr)


def validate_watch_logs(path: str | Path, known: set[str], memory_limit: str = "768MB") -> int:
    """The number of watch events in the file, all valid (:class:`CatalogueError` otherwise);
    DuckDB spills beyond ``memory_limit`` into a temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="m2s-duckdb-") as tmp:
        con = _connect(memory_limit, tmp, 0)
        try:
            return _load_events(con, Path(path), known)
        finally:
            con.close()


def cowatch_pairs_from_file(path: str | Path, known: set[str], allowed: set[str], per_movie: int = 3,
                            lookahead: int = 1, memory_limit: str = "768MB", temp_dir: str | Path | None = None,
                            threads: int = 0) -> Pairs:
    """Co-watch pairs of a watch-log file (``.csv`` with header user_id,movie_id,timestamp, or
    ``.parquet`` with those columns); ``known``: the catalogue's ids (others are errors);
    ``allowed``: the movies that may be in pairs. Raises :class:`CatalogueError` naming rows."""
    con = _connect(memory_limit, temp_dir, threads)
    _load_events(con, Path(path), known)
    out = Pairs()
    _id_table(con, "allowed", allowed)
    excluded = con.execute("SELECT count(*) FROM ev WHERE m NOT IN (SELECT m FROM allowed)").fetchall()[0][0]
    con.execute("CREATE TEMP TABLE kept AS SELECT u, m, t, min(i) AS i, count(*) AS n FROM ev "
                "WHERE m IN (SELECT m FROM allowed) GROUP BY u, m, t")
    duplicates = con.execute("SELECT coalesce(sum(n - 1), 0) FROM kept").fetchall()[0][0]
    if excluded:
        out.skipped["events of excluded movies"] = int(excluded)
    if duplicates:
        out.skipped["duplicate log rows"] = int(duplicates)
    leads = ", ".join(f"lead(m, {k}) OVER w" for k in range(1, lookahead + 1))
    rows = con.execute(f"""
        WITH seq AS (SELECT m, [{leads}] AS nexts FROM kept WINDOW w AS (PARTITION BY u ORDER BY t, i)),
             follow AS (SELECT m, unnest(nexts) AS n FROM seq),
             counts AS (SELECT m, n, count(*) AS c FROM follow WHERE n IS NOT NULL AND n <> m GROUP BY m, n),
             ranked AS (SELECT m, n, c, row_number() OVER (PARTITION BY m ORDER BY c DESC, n) AS r FROM counts)
        SELECT m, n, c FROM ranked WHERE r <= ? ORDER BY m, r""", [per_movie]).fetchall()
    con.close()
    for m, n, c in rows:
        out.add(m, n, float(c))
    return out

"""Durable storage of a human study in one SQLite file.

Every answer is its own transaction, committed before the server replies, with the write-ahead log
and `synchronous=FULL`: killing the server (or the machine) loses at most an answer the rater never
saw acknowledged. Each rater's plan (see `plan.py`) is stored when they start, so after a restart they
resume at their first unanswered unit. One `StudyStore` wraps one connection: open one per thread or
request (SQLite connections must not cross threads); WAL lets readers and the single writer overlap,
and `busy_timeout` makes concurrent writers wait instead of failing.

A file that is not a study (another program's SQLite database, or not SQLite at all) is refused before
anything is written to it: no tables are created and its journal mode is left alone.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable

from ..errors import DataError
from .items import StudyImage
from .plan import TASKS, Unit

SCHEMA_VERSION = "1"
GRID_ANSWERS = ("selected", "unselected")
TIMED_ANSWERS = ("real", "synthetic")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('real', 'synthetic')),
    path TEXT NOT NULL,
    condition TEXT,
    UNIQUE (source, path)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, rater TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    rater TEXT NOT NULL, task TEXT NOT NULL, unit INTEGER NOT NULL, prompt TEXT,
    PRIMARY KEY (rater, task, unit)
);
CREATE TABLE IF NOT EXISTS unit_items (
    rater TEXT NOT NULL, task TEXT NOT NULL, unit INTEGER NOT NULL, position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items (item_id),
    PRIMARY KEY (rater, task, item_id)
);
CREATE TABLE IF NOT EXISTS answers (
    rater TEXT NOT NULL, task TEXT NOT NULL, unit INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items (item_id),
    answer TEXT NOT NULL, response_ms INTEGER, answered_at REAL NOT NULL,
    PRIMARY KEY (rater, task, item_id)
);
CREATE INDEX IF NOT EXISTS answers_by_unit ON answers (rater, task, unit);
"""
# Images a rater could not be shown (unreadable on the server, or not displayable in their browser):
# left out of that rater's plan rather than answered. Added after schema 1, so created on open if missing.
_SKIPPED = """
CREATE TABLE IF NOT EXISTS skipped (
    rater TEXT NOT NULL, task TEXT NOT NULL, item_id TEXT NOT NULL REFERENCES items (item_id),
    reason TEXT NOT NULL, skipped_at REAL NOT NULL,
    PRIMARY KEY (rater, task, item_id)
);
"""
STUDY_TABLES = frozenset({"meta", "items", "sessions", "units", "unit_items", "answers"})


class StudyError(Exception):
    """A request the study refuses; `status` is the HTTP status the web app answers with."""

    status = 400


class NotFoundError(StudyError):
    status = 404


class AlreadyAnsweredError(StudyError):
    status = 409


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class StudyStore:
    """One connection to a study database.

    Args:
        path (`str`): the SQLite file (created with its tables on first use).

    Example:
        >>> with StudyStore("study.sqlite") as store:  # doctest: +SKIP
        ...     store.add_images(scan_folder("real", "real"))
        ...     store.ensure_plan("ana", "timed", lambda: plan_units("timed", store.items(), "ana"))
        ...     store.record_answer("ana", "timed", 0, {"3f9a...": "synthetic"}, response_ms=1800)
    """

    def __init__(self, path: str, create: bool = True):
        self.path = path
        if os.path.isdir(path):
            raise ValueError(f"study database {path} is a folder: give a file name (e.g. {path}/study.sqlite)")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"study database {path}: its folder {folder} does not exist")
        if not create and not os.path.isfile(path):
            raise FileNotFoundError(f"study database {path} does not exist")
        self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        try:
            tables = self._study_tables(create)
        except BaseException:
            self.conn.close()
            raise
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=10000")
        if not tables:
            self.conn.executescript(_SCHEMA + _SKIPPED)
            self._write("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif "skipped" not in tables:
            self.conn.executescript(_SKIPPED)

    def _study_tables(self, create: bool) -> set[str]:
        """The file's tables, after checking (read-only) that it is a study or an empty file we may fill."""
        try:
            self.conn.execute("PRAGMA busy_timeout=10000")
            tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as error:
            raise DataError(f"study database {self.path} is not an SQLite file ({error})") from None
        if tables and not STUDY_TABLES <= tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise DataError(f"{self.path} is not a dermdiff study database (it holds other tables: {shown}); "
                             "give the file `dermdiff study serve --db` created, or a new file name")
        if not tables and not create:
            raise DataError(f"{self.path} is not a dermdiff study database (it holds no tables)")
        return tables

    # -- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self, work: Callable[[sqlite3.Connection], object]):
        # BEGIN IMMEDIATE takes the write lock up front, so a read-then-write cannot interleave with
        # another thread's write (the replay check and the insert are one atomic step).
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def _write(self, sql: str, params: tuple = ()) -> None:
        self._transaction(lambda conn: conn.execute(sql, params))

    # -- settings -----------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- images -------------------------------------------------------------------------------
    def add_images(self, images: list[StudyImage]) -> int:
        """Register images under fresh opaque ids (known ones keep theirs); returns how many were new."""

        def work(conn):
            added = 0
            for image in images:
                known = conn.execute(
                    "SELECT item_id FROM items WHERE source = ? AND path = ?", (image.source, image.path)
                ).fetchone()
                if known:
                    conn.execute("UPDATE items SET condition = ? WHERE item_id = ?", (image.condition, known[0]))
                    continue
                conn.execute(
                    "INSERT INTO items (item_id, source, path, condition) VALUES (?, ?, ?, ?)",
                    (secrets.token_hex(8), image.source, image.path, image.condition),
                )
                added += 1
            return added

        return self._transaction(work)

    def items(self, paths: set[str] | None = None) -> list[tuple[str, str, str | None]]:
        """All images as `(item_id, source, condition)`, optionally only those whose path is in `paths`."""
        rows = self.conn.execute("SELECT item_id, source, condition, path FROM items ORDER BY item_id").fetchall()
        return [(r["item_id"], r["source"], r["condition"]) for r in rows if paths is None or r["path"] in paths]

    def item(self, item_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM items WHERE item_id = ?", (item_id,)).fetchone()

    # -- raters -------------------------------------------------------------------------------
    def create_session(self, rater: str, max_age_s: float | None = None) -> str:
        """A new secret session token for `rater` (only its hash is stored); drops sessions older than `max_age_s`."""
        token = secrets.token_urlsafe(24)
        now = time.time()

        def work(conn):
            if max_age_s is not None:
                conn.execute("DELETE FROM sessions WHERE created_at < ?", (now - max_age_s,))
            conn.execute("INSERT INTO sessions (token_hash, rater, created_at) VALUES (?, ?, ?)",
                         (_hash_token(token), rater, now))

        self._transaction(work)
        return token

    def rater_for_token(self, token: str | None, max_age_s: float | None = None) -> str | None:
        """The rater a session token belongs to, or None (unknown, or older than `max_age_s` seconds)."""
        if not token:
            return None
        row = self.conn.execute(
            "SELECT rater, created_at FROM sessions WHERE token_hash = ?", (_hash_token(token),)
        ).fetchone()
        if row is None or (max_age_s is not None and time.time() - row["created_at"] > max_age_s):
            return None
        return row["rater"]

    def delete_session(self, token: str) -> None:
        self._write("DELETE FROM sessions WHERE token_hash = ?", (_hash_token(token),))

    # -- plans --------------------------------------------------------------------------------
    def ensure_plan(self, rater: str, task: str, make_units: Callable[[], list[Unit]]) -> None:
        """Store `make_units()` as the rater's plan for `task` unless they already have one."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")

        def work(conn):
            if conn.execute("SELECT 1 FROM units WHERE rater = ? AND task = ?", (rater, task)).fetchone():
                return
            for index, unit in enumerate(make_units()):
                conn.execute(
                    "INSERT INTO units (rater, task, unit, prompt) VALUES (?, ?, ?, ?)", (rater, task, index, unit.prompt)
                )
                conn.executemany(
                    "INSERT INTO unit_items (rater, task, unit, position, item_id) VALUES (?, ?, ?, ?, ?)",
                    [(rater, task, index, position, item_id) for position, item_id in enumerate(unit.item_ids)],
                )

        self._transaction(work)

    def unit(self, rater: str, task: str, index: int, with_skipped: bool = False) -> Unit | None:
        """One unit of a rater's plan, without the images skipped for them (unless `with_skipped`)."""
        row = self.conn.execute(
            "SELECT prompt FROM units WHERE rater = ? AND task = ? AND unit = ?", (rater, task, index)
        ).fetchone()
        if row is None:
            return None
        ids = self.conn.execute(
            "SELECT item_id FROM unit_items WHERE rater = ? AND task = ? AND unit = ? ORDER BY position",
            (rater, task, index),
        ).fetchall()
        skipped = set() if with_skipped else self.skipped_items(rater, task)
        return Unit(row["prompt"], tuple(r["item_id"] for r in ids if r["item_id"] not in skipped))

    def progress(self, rater: str, task: str) -> tuple[int | None, int, int]:
        """`(next open unit or None, units done, total units)`; a unit whose images were all skipped is done."""
        rows = self.conn.execute(
            "SELECT u.unit, EXISTS (SELECT 1 FROM answers a WHERE a.rater = u.rater AND a.task = u.task"
            " AND a.unit = u.unit) AS done FROM units u WHERE u.rater = ? AND u.task = ? ORDER BY u.unit",
            (rater, task),
        ).fetchall()
        emptied = self._emptied_units(rater, task)
        pending = [r["unit"] for r in rows if not r["done"] and r["unit"] not in emptied]
        return (pending[0] if pending else None), len(rows) - len(pending), len(rows)

    def rater_may_see(self, rater: str, item_id: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM unit_items WHERE rater = ? AND item_id = ? LIMIT 1", (rater, item_id)
        ).fetchone() is not None

    # -- images a rater cannot be shown -------------------------------------------------------
    def skip_item(self, rater: str, task: str, item_id: str, reason: str) -> None:
        """Leave `item_id` out of the rater's plan for `task` (kept once; the first reason stays)."""
        self._write(
            "INSERT OR IGNORE INTO skipped (rater, task, item_id, reason, skipped_at) VALUES (?, ?, ?, ?, ?)",
            (rater, task, item_id, reason, time.time()),
        )

    def skipped_items(self, rater: str, task: str) -> set[str]:
        rows = self.conn.execute("SELECT item_id FROM skipped WHERE rater = ? AND task = ?", (rater, task))
        return {row[0] for row in rows}

    def skipped_rows(self) -> list[dict]:
        """Every skip joined with its image (for export)."""
        rows = self.conn.execute(
            "SELECT s.rater, s.task, s.item_id, i.source, i.path, s.reason, s.skipped_at FROM skipped s"
            " JOIN items i ON i.item_id = s.item_id ORDER BY s.skipped_at, s.rater, s.item_id"
        ).fetchall()
        return [dict(row) for row in rows]

    def _emptied_units(self, rater: str, task: str) -> set[int]:
        """Units of the plan all of whose images were skipped (nothing left to answer)."""
        any_skipped = "SELECT 1 FROM skipped WHERE rater = ? AND task = ? LIMIT 1"
        if not self.conn.execute(any_skipped, (rater, task)).fetchone():
            return set()
        rows = self.conn.execute(
            "SELECT ui.unit FROM unit_items ui LEFT JOIN skipped s ON s.rater = ui.rater AND s.task = ui.task"
            " AND s.item_id = ui.item_id WHERE ui.rater = ? AND ui.task = ? GROUP BY ui.unit"
            " HAVING COUNT(s.item_id) = COUNT(*)",
            (rater, task),
        )
        return {row[0] for row in rows}

    # -- answers ------------------------------------------------------------------------------
    def record_answer(
        self, rater: str, task: str, index: int, answers: dict[str, str], response_ms: int | None = None,
        skipped: tuple[str, ...] = (),
    ) -> int:
        """Store the answers to one unit atomically; returns the number of answer rows written.

        `answers` maps every image of the unit to its answer: `"selected"`/`"unselected"` for the
        grid tasks, `"real"`/`"synthetic"` for `timed`; images listed in `skipped` (the rater's browser
        could not show them) are recorded as skipped instead and need no answer. Raises `NotFoundError`
        (no such unit or image), `AlreadyAnsweredError` (the unit was answered before: nothing changes)
        or `StudyError` (the answers do not match the unit).
        """
        allowed = TIMED_ANSWERS if task == "timed" else GRID_ANSWERS
        for item_id, answer in answers.items():
            if answer not in allowed:
                raise StudyError(f"answer for {item_id} must be one of {allowed}, got {answer!r}")
        if set(answers) & set(skipped):
            raise StudyError(f"image {sorted(set(answers) & set(skipped))[0]!r} is both answered and skipped")

        def work(conn):
            planned = self.unit(rater, task, index, with_skipped=True)
            if planned is None:
                raise NotFoundError(f"no unit {index} in {rater}'s {task} plan")
            unknown = [i for i in [*answers, *skipped] if i not in planned.item_ids]
            if unknown:
                exists = conn.execute("SELECT 1 FROM items WHERE item_id = ?", (unknown[0],)).fetchone()
                if exists is None:
                    raise NotFoundError(f"unknown image id {unknown[0]!r}")
                raise StudyError(f"image {unknown[0]!r} is not part of unit {index}")
            still_open = self.unit(rater, task, index).item_ids
            if not still_open or conn.execute(
                "SELECT 1 FROM answers WHERE rater = ? AND task = ? AND unit = ?", (rater, task, index)
            ).fetchone():
                raise AlreadyAnsweredError(f"unit {index} was already answered")
            remaining = [item_id for item_id in still_open if item_id not in skipped]
            if set(answers) != set(remaining):
                raise StudyError(f"unit {index} needs an answer for each of its {len(remaining)} images"
                                 + (f" ({len(skipped)} skipped)" if skipped else ""))
            now = time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO skipped (rater, task, item_id, reason, skipped_at) VALUES (?, ?, ?, ?, ?)",
                [(rater, task, item_id, "the rater's browser could not show it", now) for item_id in skipped],
            )
            conn.executemany(
                "INSERT INTO answers (rater, task, unit, item_id, answer, response_ms, answered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(rater, task, index, item_id, answers[item_id], response_ms, now) for item_id in remaining],
            )
            return len(remaining)

        try:
            return self._transaction(work)
        except sqlite3.IntegrityError:
            raise AlreadyAnsweredError(f"unit {index} was already answered") from None

    def answer_rows(self) -> list[dict]:
        """Every answer joined with its image and unit prompt, in answer order (for export)."""
        rows = self.conn.execute(
            "SELECT a.rater, a.task, a.unit, u.prompt, a.item_id, i.source, i.condition, i.path, a.answer,"
            " a.response_ms, a.answered_at FROM answers a JOIN items i ON i.item_id = a.item_id"
            " JOIN units u ON u.rater = a.rater AND u.task = a.task AND u.unit = a.unit"
            " ORDER BY a.answered_at, a.rater, a.task, a.unit, a.item_id"
        ).fetchall()
        return [dict(row) for row in rows]

    def count(self, table: str) -> int:
        if table not in ("items", "sessions", "units", "unit_items", "answers", "skipped"):
            raise ValueError(f"unknown table {table!r}")
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

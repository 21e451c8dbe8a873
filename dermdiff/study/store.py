"""Durable storage of a human study in one SQLite file.

Every answer is its own transaction, committed before the server replies, with the write-ahead log
and `synchronous=FULL`: killing the server (or the machine) loses at most an answer the rater never
saw acknowledged. Each rater's plan (see `plan.py`) is stored when they start, so after a restart they
resume at their first unanswered unit. One `StudyStore` wraps one connection: open one per thread or
request (SQLite connections must not cross threads); WAL lets readers and the single writer overlap,
and `busy_timeout` makes concurrent writers wait instead of failing.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable

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

    def __init__(self, path: str):
        self.path = path
        self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=10000")
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'answers'").fetchone():
            self.conn.executescript(_SCHEMA)
            self._write("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

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
    def create_session(self, rater: str) -> str:
        """A new secret session token for `rater` (only its hash is stored)."""
        token = secrets.token_urlsafe(24)
        self._write(
            "INSERT INTO sessions (token_hash, rater, created_at) VALUES (?, ?, ?)",
            (_hash_token(token), rater, time.time()),
        )
        return token

    def rater_for_token(self, token: str | None) -> str | None:
        if not token:
            return None
        row = self.conn.execute("SELECT rater FROM sessions WHERE token_hash = ?", (_hash_token(token),)).fetchone()
        return row["rater"] if row else None

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

    def unit(self, rater: str, task: str, index: int) -> Unit | None:
        row = self.conn.execute(
            "SELECT prompt FROM units WHERE rater = ? AND task = ? AND unit = ?", (rater, task, index)
        ).fetchone()
        if row is None:
            return None
        ids = self.conn.execute(
            "SELECT item_id FROM unit_items WHERE rater = ? AND task = ? AND unit = ? ORDER BY position",
            (rater, task, index),
        ).fetchall()
        return Unit(row["prompt"], tuple(r["item_id"] for r in ids))

    def progress(self, rater: str, task: str) -> tuple[int | None, int, int]:
        """`(next unanswered unit or None, answered units, total units)` of a rater's plan."""
        rows = self.conn.execute(
            "SELECT u.unit, EXISTS (SELECT 1 FROM answers a WHERE a.rater = u.rater AND a.task = u.task"
            " AND a.unit = u.unit) AS done FROM units u WHERE u.rater = ? AND u.task = ? ORDER BY u.unit",
            (rater, task),
        ).fetchall()
        pending = [r["unit"] for r in rows if not r["done"]]
        return (pending[0] if pending else None), len(rows) - len(pending), len(rows)

    def rater_may_see(self, rater: str, item_id: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM unit_items WHERE rater = ? AND item_id = ? LIMIT 1", (rater, item_id)
        ).fetchone() is not None

    # -- answers ------------------------------------------------------------------------------
    def record_answer(
        self, rater: str, task: str, index: int, answers: dict[str, str], response_ms: int | None = None
    ) -> int:
        """Store the answers to one unit atomically; returns the number of rows written.

        `answers` maps every image of the unit to its answer: `"selected"`/`"unselected"` for the
        grid tasks, `"real"`/`"synthetic"` for `timed`. Raises `NotFoundError` (no such unit or image),
        `AlreadyAnsweredError` (the unit was answered before: nothing changes) or `StudyError` (the
        answers do not match the unit).
        """
        allowed = TIMED_ANSWERS if task == "timed" else GRID_ANSWERS
        for item_id, answer in answers.items():
            if answer not in allowed:
                raise StudyError(f"answer for {item_id} must be one of {allowed}, got {answer!r}")

        def work(conn):
            unit = self.unit(rater, task, index)
            if unit is None:
                raise NotFoundError(f"no unit {index} in {rater}'s {task} plan")
            unknown = [i for i in answers if i not in unit.item_ids]
            if unknown:
                exists = conn.execute("SELECT 1 FROM items WHERE item_id = ?", (unknown[0],)).fetchone()
                if exists is None:
                    raise NotFoundError(f"unknown image id {unknown[0]!r}")
                raise StudyError(f"image {unknown[0]!r} is not part of unit {index}")
            if set(answers) != set(unit.item_ids):
                raise StudyError(f"unit {index} needs an answer for each of its {len(unit.item_ids)} images")
            if conn.execute(
                "SELECT 1 FROM answers WHERE rater = ? AND task = ? AND unit = ?", (rater, task, index)
            ).fetchone():
                raise AlreadyAnsweredError(f"unit {index} was already answered")
            now = time.time()
            conn.executemany(
                "INSERT INTO answers (rater, task, unit, item_id, answer, response_ms, answered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(rater, task, index, item_id, answers[item_id], response_ms, now) for item_id in unit.item_ids],
            )
            return len(unit.item_ids)

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
        if table not in ("items", "sessions", "units", "unit_items", "answers"):
            raise ValueError(f"unknown table {table!r}")
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

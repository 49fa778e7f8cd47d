"""The embedded default's record store: one SQLite file under DOCFLOW_HOME standing in for the DynamoDB table,
in WAL mode so that many worker processes may write."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from docflow.errors import ConfigurationError
from docflow.ports import RecordStore
from docflow.records import DocumentRecord, PredictionRecord, ReviewDecision, UploadRecord
from docflow.values import Status

# The record's data with the label on file kept, in the same statement (no window for a label to be set
# between a read and the write); the record's own label fills in where none is on file.
_KEEP_LABEL = "json_set({new}, '$.label', COALESCE(json_extract({old}, '$.label'), json_extract({new}, '$.label')))"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_by_status ON documents (status, updated_at);
CREATE TABLE IF NOT EXISTS uploads (
    document_id TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (document_id, source)
);
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_by_document ON predictions (document_id, id);
CREATE TABLE IF NOT EXISTS decisions (
    document_id TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (document_id, decision_id)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
"""


def _enable_wal(conn: sqlite3.Connection, attempts: int = 100) -> None:
    """SQLite answers a contended journal-mode switch with "locked" at once (no busy wait): retry."""
    for _ in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        time.sleep(0.02)
    raise ConfigurationError("could not switch the record store to WAL mode: the database stays locked")


def _utc_text(moment: datetime) -> str:
    """A bound in the stored form of updated_at (utcnow().isoformat()); a naive time is taken as UTC."""
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)).isoformat()


class SqliteRecordStore(RecordStore):
    """SQLite in WAL mode: many worker processes may write; each process opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            except sqlite3.OperationalError as exc:
                raise ConfigurationError(f"cannot open record store {self.path}: {exc}") from exc
            # WAL is a property of the file: set once; switching needs an exclusive lock, which races
            # when several worker processes open a new database together.
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def create_document(self, record: DocumentRecord) -> DocumentRecord | None:
        conn = self._connect()
        cur = conn.execute(
            "INSERT OR IGNORE INTO documents (document_id, status, updated_at, data) VALUES (?, ?, ?, ?)",
            (record.document_id, record.status, record.updated_at.isoformat(), record.model_dump_json()),
        )
        return None if cur.rowcount == 1 else self.get_document(record.document_id)

    def put_document(self, record: DocumentRecord, *, keep_label: bool = False, if_status: str | None = None) -> bool:
        row = (record.document_id, record.status, record.updated_at.isoformat(), record.model_dump_json())
        data = _KEEP_LABEL.format(new="?", old="data") if keep_label else "?"
        if if_status is not None:
            cur = self._connect().execute(
                f"UPDATE documents SET status = ?, updated_at = ?, data = {data} WHERE document_id = ? AND status = ?",
                (row[1], row[2], row[3], *([row[3]] if keep_label else []), row[0], if_status),
            )
            return cur.rowcount == 1
        sql = "INSERT OR REPLACE INTO documents (document_id, status, updated_at, data) VALUES (?, ?, ?, ?)"
        if keep_label:
            sql = (
                "INSERT INTO documents (document_id, status, updated_at, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (document_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, "
                f"data = {_KEEP_LABEL.format(new='excluded.data', old='documents.data')}"
            )
        self._connect().execute(sql, row)
        return True

    def decide(self, decision: ReviewDecision) -> DocumentRecord | None:
        with self._transaction() as conn:
            record = self._changed(
                conn,
                decision.document_id,
                expect=(decision.previous_status, decision.previous_label),
                to=(decision.status, decision.label, decision.decided_at),
            )
            if record is not None:
                conn.execute(
                    "INSERT INTO decisions (document_id, decision_id, data) VALUES (?, ?, ?)",
                    (decision.document_id, decision.decision_id, decision.model_dump_json()),
                )
        return record

    def undo_decision(self, decision: ReviewDecision, undone_at: datetime) -> DocumentRecord | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT data FROM decisions WHERE document_id = ? AND decision_id = ?",
                (decision.document_id, decision.decision_id),
            ).fetchone()
            if row is None or ReviewDecision.model_validate_json(row[0]).undone_at is not None:
                return None
            record = self._changed(
                conn,
                decision.document_id,
                expect=(decision.status, decision.label),
                to=(decision.previous_status, decision.previous_label, decision.previous_updated_at),
            )
            if record is not None:
                conn.execute(
                    "UPDATE decisions SET data = ? WHERE document_id = ? AND decision_id = ?",
                    (
                        decision.model_copy(update={"undone_at": undone_at}).model_dump_json(),
                        decision.document_id,
                        decision.decision_id,
                    ),
                )
        return record

    @staticmethod
    def _changed(
        conn: sqlite3.Connection,
        document_id: str,
        expect: tuple[Status, str | None],
        to: tuple[Status, str | None, datetime],
    ) -> DocumentRecord | None:
        """Within a transaction: the document's status, label and updated_at set to ``to`` where they are
        ``expect`` now; the record as written, or None."""
        row = conn.execute("SELECT data FROM documents WHERE document_id = ?", (document_id,)).fetchone()
        if row is None:
            return None
        record = DocumentRecord.model_validate_json(row[0])
        if (record.status, record.label) != expect:
            return None
        status, label, updated_at = to
        record = record.model_copy(update={"status": status, "label": label, "updated_at": updated_at})
        conn.execute(
            "UPDATE documents SET status = ?, updated_at = ?, data = ? WHERE document_id = ?",
            (record.status, record.updated_at.isoformat(), record.model_dump_json(), document_id),
        )
        return record

    def list_decisions(self, document_id: str) -> list[ReviewDecision]:
        rows = (
            self._connect()
            .execute("SELECT data FROM decisions WHERE document_id = ? ORDER BY decision_id", (document_id,))
            .fetchall()
        )
        return [ReviewDecision.model_validate_json(r[0]) for r in rows]

    @staticmethod
    def _queue_filter(predicted_class: str | None, code: str | None) -> tuple[str, list[object]]:
        where: list[str] = ["status = ?"]
        args: list[object] = [Status.NEEDS_REVIEW.value]
        if predicted_class is not None:
            where.append("json_extract(data, '$.predicted_class') = ?")
            args.append(predicted_class)
        if code is not None:
            where.append("json_extract(data, '$.code') = ?")
            args.append(code)
        return " AND ".join(where), args

    def list_review_queue(
        self, predicted_class: str | None = None, code: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]:
        # Cursor = the last (updated_at, document_id) seen, oldest first (documents_by_status).
        where, args = self._queue_filter(predicted_class, code)
        if cursor:
            updated_at, _, document_id = cursor.partition("|")
            where += " AND (updated_at, document_id) > (?, ?)"
            args += [updated_at, document_id]
        rows = (
            self._connect()
            .execute(
                f"SELECT data, updated_at, document_id FROM documents WHERE {where} "
                "ORDER BY updated_at, document_id LIMIT ?",
                [*args, limit + 1],
            )
            .fetchall()
        )
        records = [DocumentRecord.model_validate_json(r[0]) for r in rows[:limit]]
        next_cursor = f"{rows[limit - 1][1]}|{rows[limit - 1][2]}" if len(rows) > limit else None
        return records, next_cursor

    def count_review_queue(self, predicted_class: str | None = None, code: str | None = None) -> int:
        where, args = self._queue_filter(predicted_class, code)
        return int(self._connect().execute(f"SELECT COUNT(*) FROM documents WHERE {where}", args).fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (the write lock at once) … COMMIT, or ROLLBACK on any error."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def restart_document(self, record: DocumentRecord, stale_before: datetime | None = None) -> bool:
        sql = (
            f"UPDATE documents SET status = ?, updated_at = ?, data = {_KEEP_LABEL.format(new='?', old='data')} "
            "WHERE document_id = ? AND (status = 'FAILED'"
        )
        data = record.model_dump_json()  # twice: the record, and the label it brings where none is on file
        args: list[object] = [record.status, record.updated_at.isoformat(), data, data, record.document_id]
        if stale_before is not None:  # updated_at holds isoformat() text: compared as written
            sql += " OR (status IN ('PROCESSING', 'RECEIVED') AND updated_at < ?)"
            args.append(_utc_text(stale_before))
        cur = self._connect().execute(sql + ")", args)
        return cur.rowcount == 1

    def get_document(self, document_id: str) -> DocumentRecord | None:
        row = self._connect().execute("SELECT data FROM documents WHERE document_id = ?", (document_id,)).fetchone()
        return DocumentRecord.model_validate_json(row[0]) if row else None

    def list_documents(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]:
        # Cursor = the last (updated_at, document_id) seen, newest first.
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if cursor:
            updated_at, _, document_id = cursor.partition("|")
            where.append("(updated_at, document_id) < (?, ?)")
            args += [updated_at, document_id]
        sql = "SELECT data, updated_at, document_id FROM documents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC, document_id DESC LIMIT ?"
        rows = self._connect().execute(sql, [*args, limit + 1]).fetchall()
        records = [DocumentRecord.model_validate_json(r[0]) for r in rows[:limit]]
        next_cursor = f"{rows[limit - 1][1]}|{rows[limit - 1][2]}" if len(rows) > limit else None
        return records, next_cursor

    def iter_documents(self) -> Iterator[DocumentRecord]:
        for (data,) in self._connect().execute("SELECT data FROM documents").fetchall():
            yield DocumentRecord.model_validate_json(data)

    # The key column holds the object id (source, and version where there is one): a row per object.
    _UPLOAD_ROW = "INSERT INTO uploads (document_id, source, status, data) VALUES (?, ?, ?, ?)"

    def put_upload(self, upload: UploadRecord) -> None:
        self._write_upload(upload, only_open=False)

    def create_upload(self, upload: UploadRecord) -> UploadRecord | None:
        if self._write_upload(upload, only_open=True):
            return None
        return next((u for u in self.list_uploads(upload.document_id) if u.object_id == upload.object_id), None)

    def _write_upload(self, upload: UploadRecord, only_open: bool) -> bool:
        """Upsert this object's row (only over a RECEIVED or FAILED one when only_open); a versioned row also
        drops its source's RECEIVED placeholder, in the same transaction. True when written."""
        row = (upload.document_id, upload.object_id, upload.status, upload.model_dump_json())
        conflict = " ON CONFLICT (document_id, source) DO UPDATE SET status = excluded.status, data = excluded.data"
        if only_open:
            conflict += " WHERE uploads.status IN ('RECEIVED', 'FAILED')"
        with self._transaction() as conn:
            written = conn.execute(self._UPLOAD_ROW + conflict, row).rowcount == 1
            if written and upload.version_id is not None:
                conn.execute(
                    "DELETE FROM uploads WHERE document_id = ? AND source = ? AND status = 'RECEIVED'",
                    (upload.document_id, upload.source),
                )
        return written

    def list_uploads(self, document_id: str) -> list[UploadRecord]:
        rows = (
            self._connect()
            .execute("SELECT data FROM uploads WHERE document_id = ? ORDER BY rowid", (document_id,))
            .fetchall()
        )
        return [UploadRecord.model_validate_json(r[0]) for r in rows]

    def add_prediction(self, prediction: PredictionRecord) -> None:
        self._connect().execute(
            "INSERT INTO predictions (document_id, created_at, data) VALUES (?, ?, ?)",
            (prediction.document_id, prediction.created_at.isoformat(), prediction.model_dump_json()),
        )

    def list_predictions(self, document_id: str) -> list[PredictionRecord]:
        rows = (
            self._connect()
            .execute("SELECT data FROM predictions WHERE document_id = ? ORDER BY id", (document_id,))
            .fetchall()
        )
        return [PredictionRecord.model_validate_json(r[0]) for r in rows]

    def list_documents_updated(self, statuses: Sequence[str], since: datetime, until: datetime) -> list[DocumentRecord]:
        if not statuses:
            return []
        # updated_at is stored as isoformat text in UTC: string order is time order (documents_by_status).
        rows = (
            self._connect()
            .execute(
                f"SELECT data FROM documents WHERE status IN ({', '.join('?' * len(statuses))}) "
                "AND updated_at >= ? AND updated_at < ? ORDER BY updated_at, document_id",
                [*statuses, _utc_text(since), _utc_text(until)],
            )
            .fetchall()
        )
        return [DocumentRecord.model_validate_json(r[0]) for r in rows]

    def increment_counter(self, name: str) -> int:
        row = (
            self._connect()
            .execute(
                "INSERT INTO counters (name, n) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET n = n + 1 RETURNING n",
                (name,),
            )
            .fetchone()
        )
        return int(row[0])

    def get_counter(self, name: str) -> int:
        row = self._connect().execute("SELECT n FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def count_uploads_by_status(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT status, COUNT(*) FROM uploads GROUP BY status").fetchall()
        return {status: n for status, n in rows}

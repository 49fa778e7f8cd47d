"""DynamoDB behind the RecordStore interface: one table for documents, uploads, predictions, decisions and
counters. The client is created on first use, never at import (so moto can patch it in tests and a cold
start pays only for what it touches).

Over 400 lines on purpose: it is one class implementing the whole RecordStore port on one table, and its
key design (pk/sk, the by-status index's gsi1pk/gsi1sk, the conditions that make writes idempotent) is
read best in one place, beside the SQLite store (adapters/sqlite.py) that implements the same port."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import TypeAdapter

from docflow.adapters.boto import BOTO_CONFIG, translate
from docflow.errors import ConfigurationError, TransientError
from docflow.ports import RecordStore
from docflow.records import DocumentRecord, PredictionRecord, ReviewDecision, UploadRecord
from docflow.values import Status

_ISO = TypeAdapter(datetime)


def _status_sort_key(updated_at: datetime, document_id: str) -> str:
    """The by-status index's sort key: newest first by update time, the id to break ties."""
    return f"{updated_at.isoformat()}#{document_id}"


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


# Single-table layout: pk = document_id; sk = DOCUMENT | UPLOAD#<source> | PREDICTION#<iso time> |
# DECISION#<decision_id>.
# Document items also carry gsi1pk/gsi1sk (status, updated_at) — a sparse index for listing by status.
DOCUMENT_SK = "DOCUMENT"
UPLOAD_PREFIX = "UPLOAD#"
_MAX_SORT_KEY_BYTES = 1024  # DynamoDB's limit; an S3 key alone may be 1024 bytes, s3://bucket/ comes on top


def upload_sort_key(source: str) -> str:
    """UPLOAD#<source>, the source being an object id (the source and its version); one too long for a sort
    key keeps its start and ends with its SHA-256, so the key stays unique and the same on every delivery (the
    item's `source` attribute keeps it whole)."""
    key = f"{UPLOAD_PREFIX}{source}"
    if len(key.encode()) <= _MAX_SORT_KEY_BYTES:
        return key
    digest = hashlib.sha256(source.encode()).hexdigest()
    head = source.encode()[: _MAX_SORT_KEY_BYTES - len(UPLOAD_PREFIX) - len(digest) - 8].decode("utf-8", "ignore")
    return f"{UPLOAD_PREFIX}{head}…#{digest}"


PREDICTION_PREFIX = "PREDICTION#"
DECISION_PREFIX = "DECISION#"
# Counters live under pk = COUNTER#<name>, sk = COUNTER: no status index entry, never listed as documents.
COUNTER_PREFIX = "COUNTER#"
COUNTER_SK = "COUNTER"
STATUS_INDEX = "by-status"


def _utc_text(moment: datetime) -> str:
    """A bound in the stored form of updated_at (utcnow().isoformat()); a naive time is taken as UTC."""
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)).isoformat()


def _to_item(model: Any) -> dict[str, Any]:
    # DynamoDB wants Decimal, not float; a JSON round trip converts nested values too.
    item: dict[str, Any] = json.loads(model.model_dump_json(exclude_none=True), parse_float=Decimal)
    return item


class DynamoRecordStore(RecordStore):
    def __init__(self, table_name: str) -> None:
        if not table_name:
            raise ConfigurationError("the DynamoDB record store needs a table name (DOCFLOW_TABLE_NAME)")
        self.table_name = table_name

    @cached_property
    def _table(self) -> Any:
        return boto3.resource("dynamodb", config=BOTO_CONFIG).Table(self.table_name)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise
            raise translate(exc, f"{what} on table {self.table_name}") from exc

    def _write_if(self, what: str, fn: Any, **kwargs: Any) -> Any | None:
        """A conditional write: its response, or None when its condition failed (the state on file decided)."""
        try:
            return self._call(what, fn, **kwargs)
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            return None

    def _document_item(self, record: DocumentRecord) -> dict[str, Any]:
        item = _to_item(record)
        item.update(
            pk=record.document_id,
            sk=DOCUMENT_SK,
            gsi1pk=str(record.status),
            gsi1sk=_status_sort_key(record.updated_at, record.document_id),
        )
        return item

    def restart_document(self, record: DocumentRecord, stale_before: datetime | None = None) -> bool:
        condition = "#status = :failed"
        values: dict[str, Any] = {":failed": Status.FAILED.value}
        if stale_before is not None:
            # updated_at is stored as pydantic writes it (ISO 8601, UTC, "Z"): compare like with like.
            condition += " OR (#status IN (:processing, :received) AND updated_at < :stale)"
            values.update(
                {
                    ":processing": Status.PROCESSING.value,
                    ":received": Status.RECEIVED.value,
                    ":stale": _ISO.dump_python(stale_before, mode="json"),
                }
            )
        update = self._update_keeping_label(record)
        update["ExpressionAttributeNames"]["#status"] = "status"
        update["ExpressionAttributeValues"].update(values)
        written = self._write_if("restart document", self._table.update_item, **update, ConditionExpression=condition)
        return written is not None  # None: neither FAILED nor an orphan any more

    def create_document(self, record: DocumentRecord) -> DocumentRecord | None:
        if self._write_if(
            "create document",
            self._table.put_item,
            Item=self._document_item(record),
            ConditionExpression="attribute_not_exists(pk)",
        ):
            return None
        return self.get_document(record.document_id)  # somebody owns this content already

    def put_document(self, record: DocumentRecord, *, keep_label: bool = False, if_status: str | None = None) -> bool:
        condition: dict[str, Any] = {}
        if if_status is not None:
            condition = {
                "ConditionExpression": "#if_status = :if_status",
                "ExpressionAttributeNames": {"#if_status": "status"},
                "ExpressionAttributeValues": {":if_status": if_status},
            }
        if not keep_label:
            return (
                self._write_if("put document", self._table.put_item, Item=self._document_item(record), **condition)
                is not None
            )
        update = self._update_keeping_label(record)
        if condition:
            update["ExpressionAttributeNames"].update(condition["ExpressionAttributeNames"])
            update["ExpressionAttributeValues"].update(condition["ExpressionAttributeValues"])
            update["ConditionExpression"] = condition["ConditionExpression"]
        return self._write_if("put document", self._table.update_item, **update) is not None

    def _update_keeping_label(self, record: DocumentRecord) -> dict[str, Any]:
        """update_item arguments that write every attribute of ``record`` but the label, which is set only
        where none is on file: a label a user set while this record was being made stays, in the same write
        (no read before it to go stale)."""
        item = self._document_item(record)
        label = item.pop("label", None)
        del item["pk"], item["sk"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets: list[str] = []
        for i, (attr, value) in enumerate(item.items()):
            names[f"#a{i}"], values[f":v{i}"] = attr, value
            sets.append(f"#a{i} = :v{i}")
        if label is not None:
            names["#label"], values[":label"] = "label", label
            sets.append("#label = if_not_exists(#label, :label)")
        # A field now None is absent from the item (_to_item): remove what an earlier write left.
        absent = [f for f in DocumentRecord.model_fields if f not in item and f != "label"]
        removes = []
        for i, attr in enumerate(absent):
            names[f"#r{i}"] = attr
            removes.append(f"#r{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return {
            "Key": {"pk": record.document_id, "sk": DOCUMENT_SK},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def decide(self, decision: ReviewDecision) -> DocumentRecord | None:
        item = _to_item(decision)
        item.update(pk=decision.document_id, sk=f"{DECISION_PREFIX}{decision.decision_id}")
        put = {"Put": {"TableName": self.table_name, "Item": item, "ConditionExpression": "attribute_not_exists(sk)"}}
        update = self._status_change(
            decision.document_id,
            expect=(decision.previous_status, decision.previous_label),
            to=(decision.status, decision.label, decision.decided_at),
        )
        if not self._transact("record decision", [update, put]):
            return None
        return self.get_document(decision.document_id)

    def undo_decision(self, decision: ReviewDecision, undone_at: datetime) -> DocumentRecord | None:
        mark = {
            "Update": {
                "TableName": self.table_name,
                "Key": {"pk": decision.document_id, "sk": f"{DECISION_PREFIX}{decision.decision_id}"},
                "UpdateExpression": "SET undone_at = :undone",
                "ConditionExpression": "attribute_exists(sk) AND attribute_not_exists(undone_at)",
                "ExpressionAttributeValues": {":undone": _ISO.dump_python(undone_at, mode="json")},
            }
        }
        update = self._status_change(
            decision.document_id,
            expect=(decision.status, decision.label),
            to=(decision.previous_status, decision.previous_label, decision.previous_updated_at),
        )
        if not self._transact("undo decision", [update, mark]):
            return None
        return self.get_document(decision.document_id)

    def _status_change(
        self, document_id: str, expect: tuple[Status, str | None], to: tuple[Status, str | None, datetime]
    ) -> dict[str, Any]:
        """A transaction's update of the document: status, label and updated_at (and the by-status index's
        keys) set to ``to``, on condition that status and label are ``expect``."""
        (old_status, old_label), (status, label, updated_at) = expect, to
        names = {"#status": "status", "#label": "label", "#updated": "updated_at"}
        values: dict[str, Any] = {
            ":old_status": old_status.value,
            ":status": status.value,
            ":updated": _ISO.dump_python(updated_at, mode="json"),
            ":gsi1sk": _status_sort_key(updated_at, document_id),
        }
        condition = "attribute_exists(pk) AND #status = :old_status AND "
        if old_label is None:
            condition += "attribute_not_exists(#label)"
        else:
            condition += "#label = :old_label"
            values[":old_label"] = old_label
        expression = "SET #status = :status, gsi1pk = :status, #updated = :updated, gsi1sk = :gsi1sk"
        if label is None:
            expression += " REMOVE #label"
        else:
            expression += ", #label = :label"
            values[":label"] = label
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {"pk": document_id, "sk": DOCUMENT_SK},
                "UpdateExpression": expression,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _transact(self, what: str, items: list[dict[str, Any]]) -> bool:
        """One TransactWriteItems (the resource's client: plain Python values); False when a condition failed."""
        try:
            self._table.meta.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if exc.response["Error"]["Code"] == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
                return False
            if exc.response["Error"]["Code"] == "TransactionCanceledException":  # a conflict with another writer
                raise TransientError(f"{what} on table {self.table_name}: {', '.join(map(str, reasons))}") from exc
            raise translate(exc, f"{what} on table {self.table_name}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"{what} on table {self.table_name}") from exc
        return True

    def list_decisions(self, document_id: str) -> list[ReviewDecision]:
        items = self._query_prefix(document_id, DECISION_PREFIX)
        return [ReviewDecision.model_validate(i) for i in items]  # sk order: decision_id, time order

    @staticmethod
    def _queue_filter(predicted_class: str | None, code: str | None) -> dict[str, Any]:
        condition = None
        for attr, value in (("predicted_class", predicted_class), ("code", code)):
            if value is not None:
                term = Attr(attr).eq(value)
                condition = term if condition is None else condition & term
        return {} if condition is None else {"FilterExpression": condition}

    def list_review_queue(
        self, predicted_class: str | None = None, code: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]:
        """Oldest first: the NEEDS_REVIEW partition of the by-status index read forwards from the cursor (the
        index sort key of the last document returned), filtered; a page reads until it has ``limit + 1``."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        condition = Key("gsi1pk").eq(Status.NEEDS_REVIEW.value)
        if cursor:
            condition &= Key("gsi1sk").gt(self._cursor_key(cursor))
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": condition,
            "ScanIndexForward": True,
            **self._queue_filter(predicted_class, code),
        }
        items: list[dict[str, Any]] = []
        while len(items) <= limit:
            # Filtered, a read keeps only some of what it reads: read more at a time.
            want = 200 if "FilterExpression" in kwargs else max(limit + 1 - len(items), 25)
            resp = self._call("list review queue", self._table.query, Limit=want, **kwargs)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        page = items[:limit]
        next_cursor = str(page[-1]["gsi1sk"]) if len(items) > limit else None
        return [DocumentRecord.model_validate(i) for i in page], next_cursor

    def count_review_queue(self, predicted_class: str | None = None, code: str | None = None) -> int:
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": Key("gsi1pk").eq(Status.NEEDS_REVIEW.value),
            "Select": "COUNT",
            **self._queue_filter(predicted_class, code),
        }
        total = 0
        while True:
            resp = self._call("count review queue", self._table.query, **kwargs)
            total += int(resp.get("Count", 0))
            if "LastEvaluatedKey" not in resp:
                return total
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def get_document(self, document_id: str) -> DocumentRecord | None:
        resp = self._call(
            "get document",
            self._table.get_item,
            Key={"pk": document_id, "sk": DOCUMENT_SK},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return DocumentRecord.model_validate(item) if item else None

    def list_documents(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[DocumentRecord], str | None]:
        """Newest first by update time, as the local store lists them, with or without a status: each status
        is a partition of the by-status index, read newest first from the cursor down, and the partitions
        are merged. No scan: a page costs at most ``limit + 1`` items per status, whatever the table holds.

        The cursor is the index sort key (``<updated_at>#<document_id>``) of the last document returned; a
        document updated after the listing began moves above it, so paging never returns one twice."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        below = self._cursor_key(cursor) if cursor else None
        merged: list[dict[str, Any]] = []
        for one in [status] if status else [s.value for s in Status]:
            merged += self._newest_in_status(one, below, limit + 1)
        merged.sort(key=lambda item: str(item["gsi1sk"]), reverse=True)
        page = merged[:limit]
        records = [DocumentRecord.model_validate(item) for item in page]
        return records, (str(page[-1]["gsi1sk"]) if len(merged) > limit else None)

    def _newest_in_status(self, status: str, below: str | None, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` document items in ``status``, newest first, sorting below ``below`` when given
        (a query's 1 MB page may hold fewer than asked: read on until ``count`` or the partition ends)."""
        condition = Key("gsi1pk").eq(status)
        if below is not None:
            condition &= Key("gsi1sk").lt(below)
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": condition,
            "ScanIndexForward": False,
        }
        items: list[dict[str, Any]] = []
        while len(items) < count:
            resp = self._call("list documents", self._table.query, Limit=count - len(items), **kwargs)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return items

    def iter_documents(self) -> Iterator[DocumentRecord]:
        # A full pass is what a scan is for: each item read once (the merged listing reads every status).
        kwargs: dict[str, Any] = {"FilterExpression": Key("sk").eq(DOCUMENT_SK)}
        while True:
            resp = self._call("scan documents", self._table.scan, **kwargs)
            yield from (DocumentRecord.model_validate(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    @staticmethod
    def _cursor_key(cursor: str) -> str:
        """The index sort key a cursor of list_documents holds; ValueError for any other text (a tampered
        cursor is the caller's error, not a request botocore refuses as malformed, which would read as
        transient)."""
        moment, sep, document_id = cursor.rpartition("#")
        try:
            datetime.fromisoformat(moment)
        except ValueError:
            raise ValueError("the cursor is not a position in this listing") from None
        if not sep or not document_id:
            raise ValueError("the cursor is not a position in this listing")
        return cursor

    def put_upload(self, upload: UploadRecord) -> None:
        self._call("put upload", self._table.put_item, Item=self._upload_item(upload))
        self._drop_placeholder(upload)

    def create_upload(self, upload: UploadRecord) -> UploadRecord | None:
        if not self._write_if(
            "create upload",
            self._table.put_item,
            Item=self._upload_item(upload),
            ConditionExpression="attribute_not_exists(sk) OR #status IN (:received, :failed)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":received": Status.RECEIVED.value, ":failed": Status.FAILED.value},
        ):
            # this object's outcome is on record already
            key = {"pk": upload.document_id, "sk": upload_sort_key(upload.object_id)}
            item = self._call("get upload", self._table.get_item, Key=key, ConsistentRead=True).get("Item")
            return UploadRecord.model_validate(item) if item else None
        self._drop_placeholder(upload)
        return None

    @staticmethod
    def _upload_item(upload: UploadRecord) -> dict[str, Any]:
        item = _to_item(upload)
        item.update(pk=upload.document_id, sk=upload_sort_key(upload.object_id))
        return item

    def _drop_placeholder(self, upload: UploadRecord) -> None:
        """The source's RECEIVED record from before its version was known (the API's), if there is one. Only
        that: a versionless record with an outcome is history and stays."""
        if upload.version_id is None:
            return
        self._write_if(  # a failed condition: none, or not a placeholder
            "delete upload placeholder",
            self._table.delete_item,
            Key={"pk": upload.document_id, "sk": upload_sort_key(upload.source)},
            ConditionExpression="#status = :received",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":received": Status.RECEIVED.value},
        )

    def _query_prefix(self, document_id: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(document_id) & Key("sk").begins_with(prefix),
            "ConsistentRead": True,
        }
        while True:
            resp = self._call("query", self._table.query, **kwargs)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def list_uploads(self, document_id: str) -> list[UploadRecord]:
        items = self._query_prefix(document_id, UPLOAD_PREFIX)
        return sorted((UploadRecord.model_validate(i) for i in items), key=lambda u: u.received_at)

    def add_prediction(self, prediction: PredictionRecord) -> None:
        item = _to_item(prediction)
        item.update(pk=prediction.document_id, sk=f"{PREDICTION_PREFIX}{prediction.created_at.isoformat()}")
        self._call("add prediction", self._table.put_item, Item=item)

    def list_predictions(self, document_id: str) -> list[PredictionRecord]:
        return [PredictionRecord.model_validate(i) for i in self._query_prefix(document_id, PREDICTION_PREFIX)]

    def list_documents_updated(self, statuses: Sequence[str], since: datetime, until: datetime) -> list[DocumentRecord]:
        # The by-status index is sorted by "<updated_at iso>#<id>": a key range per status is the window
        # ("<since>" sorts before "<since>#…", "<until>" before "<until>#…": [since, until)).
        records: list[DocumentRecord] = []
        for status in statuses:
            kwargs: dict[str, Any] = {
                "IndexName": STATUS_INDEX,
                "KeyConditionExpression": Key("gsi1pk").eq(status)
                & Key("gsi1sk").between(_utc_text(since), _utc_text(until)),
            }
            while True:
                resp = self._call("list documents updated", self._table.query, **kwargs)
                records += [DocumentRecord.model_validate(i) for i in resp.get("Items", [])]
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted(records, key=lambda r: (r.updated_at, r.document_id))

    def increment_counter(self, name: str) -> int:
        resp = self._call(
            "increment counter",
            self._table.update_item,
            Key={"pk": f"{COUNTER_PREFIX}{name}", "sk": COUNTER_SK},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["n"])

    def get_counter(self, name: str) -> int:
        resp = self._call(
            "get counter",
            self._table.get_item,
            Key={"pk": f"{COUNTER_PREFIX}{name}", "sk": COUNTER_SK},
            ConsistentRead=True,
        )
        return int(resp.get("Item", {}).get("n", 0))

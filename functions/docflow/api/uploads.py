"""Uploads: where they go and how they are named (keys under incoming/, safe file names, upload sources),
the signed upload URLs `docflow serve` hands out in place of S3 presigned ones, and accepting an upload
(POST /documents, PUT to an upload URL): stored, recorded RECEIVED and handed to the pipeline before the 202."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from docflow.api.config import ApiSettings
from docflow.api.errors import ApiError
from docflow.api.schemas import (
    DocumentAccepted,
    UploadUrlRequest,
    UploadUrlResponse,
)
from docflow.api.worker import PendingUpload, QueueFullError, StoppingError, Submitter, WorkersUnavailableError
from docflow.context import StepContext
from docflow.records import UploadRecord
from docflow.settings import Settings
from docflow.values import RejectionCode, Status

INCOMING_PREFIX = "incoming/"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 100


def safe_file_name(name: str | None) -> str:
    """The last path component, reduced to [A-Za-z0-9._-], no leading dot, at most 100 characters."""
    base = re.split(r"[/\\]", name or "")[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:MAX_NAME_CHARS].strip("._")
    return cleaned or "document"


def new_upload_key(file_name: str | None) -> tuple[str, str]:
    """(upload_id, key): a fresh folder per upload, so two uploads never overwrite each other."""
    upload_id = uuid.uuid4().hex
    return upload_id, f"{INCOMING_PREFIX}{upload_id}/{safe_file_name(file_name)}"


def upload_source(settings: Settings, key: str) -> str:
    """The source the pipeline records for this key: on AWS exactly what the S3 trigger builds, so the
    pipeline's upload record replaces the API's RECEIVED one."""
    if settings.backend == "aws":
        return f"s3://{settings.documents_bucket}/{key}"
    return key


class UploadGrant(BaseModel):
    """What a local upload URL allows: one PUT of `key`, before `expires`, of bytes hashing to `sha256`."""

    key: str
    expires: int
    sha256: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_grant(grant: UploadGrant, secret: bytes) -> str:
    payload = grant.model_dump_json(exclude_none=True).encode()
    return f"{_b64(payload)}.{_b64(hmac.new(secret, payload, hashlib.sha256).digest())}"


def verify_grant(token: str, secret: bytes, now: float | None = None) -> UploadGrant | None:
    """The grant if the token is authentic and unexpired, else None (which of the two is not said)."""
    try:
        payload_b64, signature_b64 = token.split(".", 1)
        payload, signature = _unb64(payload_b64), _unb64(signature_b64)
    except ValueError:
        return None
    if not hmac.compare_digest(signature, hmac.new(secret, payload, hashlib.sha256).digest()):
        return None
    try:
        grant = UploadGrant.model_validate(json.loads(payload))
    except (ValueError, ValidationError):
        return None
    if grant.expires < (time.time() if now is None else now) or not grant.key.startswith(INCOMING_PREFIX):
        return None
    return grant


UPLOAD_URL_HINT = "use POST /documents/upload-url for larger files"


# -- accepting an upload -----------------------------------------------------------------------------------


def check_size(data: bytes, api: ApiSettings) -> None:
    if len(data) > api.api_max_upload_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"the file is {len(data):,} bytes; this endpoint takes at most {api.api_max_upload_bytes:,} "
            f"bytes: {UPLOAD_URL_HINT}",
        )


def sniff(ctx: StepContext, data: bytes) -> Any:
    """The validation report of the pipeline's own Validate (content, not the declared type)."""
    # Imported here: validation loads Pillow and pdfium (~40 ms of the API's Lambda cold start), and only an
    # upload needs them.
    from docflow.domain.validation import validate_document

    if not data:
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    report = validate_document(data, ctx.settings.limits)
    if report.code == RejectionCode.UNSUPPORTED_TYPE:
        raise ApiError(415, "unsupported_media_type", report.reason or "unsupported file type")
    return report


def _busy(exc: Exception) -> ApiError:
    return ApiError(503, "busy", f"not accepting uploads right now ({exc}); retry later", headers={"Retry-After": "10"})


def _record_and_submit(ctx: StepContext, submitter: Submitter, job: PendingUpload, store: Callable[[], None]) -> None:
    """The RECEIVED upload record first (a poll right after the 202 finds the document), then the bytes (on AWS
    their arrival starts the state machine), then the local workers. A failure on the way marks the upload
    FAILED, so none stays RECEIVED for nothing."""
    try:
        submitter.check_room()  # refused now: nothing stored, no record a client could find after the 503
    except (StoppingError, QueueFullError) as exc:
        raise _busy(exc) from exc
    ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.RECEIVED))
    try:
        store()
        submitter.accept(job)
    # filled up in between, or no worker could start: the upload is FAILED, never left RECEIVED
    except (StoppingError, QueueFullError, WorkersUnavailableError) as exc:
        ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.FAILED))
        raise _busy(exc) from exc
    except Exception:
        ctx.records.put_upload(UploadRecord(document_id=job.document_id, source=job.source, status=Status.FAILED))
        raise


def accept_upload(
    ctx: StepContext, api: ApiSettings, submitter: Submitter, file_name: str | None, data: bytes
) -> DocumentAccepted:
    """Store one upload under incoming/ and hand it to the pipeline; answer before it runs (202).

    Rejections other than an unsupported type (corrupt, encrypted, too many pages) are the pipeline's to
    record: the document ends REJECTED with its reason, as one put in the bucket directly would.
    """
    check_size(data, api)
    report = sniff(ctx, data)
    upload_id, key = new_upload_key(file_name)
    job = PendingUpload(
        upload_id=upload_id, document_id=report.document_id, key=key, source=upload_source(ctx.settings, key)
    )
    known = ctx.records.get_document(job.document_id) is not None
    _record_and_submit(ctx, submitter, job, lambda: ctx.blobs.put(key, data, content_type=report.media_type))
    return DocumentAccepted(
        document_id=job.document_id,
        upload_id=upload_id,
        status=Status.RECEIVED,
        file_name=safe_file_name(file_name),
        size_bytes=len(data),
        media_type=report.media_type,
        already_known=known,
        status_url=f"/documents/{job.document_id}",
    )


def accept_granted_upload(
    ctx: StepContext, submitter: Submitter, grant: UploadGrant, path: Path, document_id: str, size: int
) -> DocumentAccepted:
    """A file PUT to a local upload URL (the local stand-in for an S3 presigned PUT), already on disk."""
    if grant.sha256 and grant.sha256 != document_id:
        raise ApiError(400, "checksum_mismatch", "the uploaded bytes do not match the sha256 the URL was made for")
    upload_id = grant.key.split("/")[1]
    job = PendingUpload(
        upload_id=upload_id, document_id=document_id, key=grant.key, source=upload_source(ctx.settings, grant.key)
    )
    known = ctx.records.get_document(document_id) is not None

    def store() -> None:
        put_file = getattr(ctx.blobs, "put_file", None)  # the local store copies without loading the file
        if put_file is not None:
            put_file(grant.key, path)
        else:
            ctx.blobs.put(grant.key, path.read_bytes())

    _record_and_submit(ctx, submitter, job, store)
    return DocumentAccepted(
        document_id=document_id,
        upload_id=upload_id,
        status=Status.RECEIVED,
        file_name=grant.key.rsplit("/", 1)[-1],
        size_bytes=size,
        already_known=known,
        status_url=f"/documents/{document_id}",
    )


@lru_cache(maxsize=1)
def _s3_presigner() -> Any:
    # Imported here: only an upload URL on AWS signs with boto3; `docflow serve` never loads it.
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(signature_version="s3v4"))


def upload_url(
    ctx: StepContext, api: ApiSettings, request: UploadUrlRequest, base_url: str, secret: bytes
) -> UploadUrlResponse:
    """Where to PUT a large file: an S3 presigned URL on AWS, a signed URL of this server locally. Either
    way the object lands under incoming/ and goes through the pipeline like any other."""
    _, key = new_upload_key(request.file_name)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=api.api_upload_url_expires)
    headers: dict[str, str] = {}
    if ctx.settings.backend == "aws":
        params: dict[str, Any] = {"Bucket": ctx.settings.documents_bucket, "Key": key}
        if request.sha256:
            checksum = base64.b64encode(bytes.fromhex(request.sha256)).decode()
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        url = _s3_presigner().generate_presigned_url(
            "put_object", Params=params, ExpiresIn=api.api_upload_url_expires, HttpMethod="PUT"
        )
    else:
        grant = UploadGrant(key=key, expires=int(expires_at.timestamp()), sha256=request.sha256)
        url = f"{base_url.rstrip('/')}/uploads/{sign_grant(grant, secret)}"
    return UploadUrlResponse(
        url=url,
        headers=headers,
        key=key,
        expires_at=expires_at,
        max_bytes=ctx.settings.max_bytes,
        document_id=request.sha256,
    )

"""Where uploads go and how they are named: keys under incoming/, safe file names, upload sources, and
the signed upload URLs `docflow serve` hands out in place of S3 presigned ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid

from pydantic import BaseModel, ValidationError

from docflow.settings import Settings

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

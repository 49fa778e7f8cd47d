"""S3 behind the BlobStore interface: the documents and model buckets. The client is created on first use,
never at import (so moto can patch it in tests and a cold start pays only for what it touches)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from docflow.adapters.boto import BOTO_CONFIG, translate
from docflow.errors import ConfigurationError
from docflow.ports import BlobNotFoundError, BlobStore


def _missing(exc: Exception) -> bool:
    """No such key, or no such version of it (deleted since its event was sent); HEAD answers a bare 404."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "NoSuchKey",
        "NoSuchVersion",
        "404",
        "NotFound",
    )


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str) -> None:
        if not bucket:
            raise ConfigurationError("the S3 blob store needs a bucket name (DOCFLOW_DOCUMENTS_BUCKET)")
        self.bucket = bucket

    @cached_property
    def _s3(self) -> Any:
        return boto3.client("s3", config=BOTO_CONFIG)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"put s3://{self.bucket}/{key}") from exc

    @staticmethod
    def _version(version_id: str | None) -> dict[str, str]:
        return {"VersionId": version_id} if version_id else {}

    def get(self, key: str, version_id: str | None = None) -> bytes:
        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key, **self._version(version_id))["Body"].read()
            return body
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                raise BlobNotFoundError(key) from None
            raise translate(exc, f"get s3://{self.bucket}/{key}") from exc

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return False
            raise translate(exc, f"head s3://{self.bucket}/{key}") from exc

    def size(self, key: str, version_id: str | None = None) -> int:
        try:
            return int(self._s3.head_object(Bucket=self.bucket, Key=key, **self._version(version_id))["ContentLength"])
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                raise BlobNotFoundError(key) from None
            raise translate(exc, f"head s3://{self.bucket}/{key}") from exc

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20, version_id: str | None = None) -> Iterator[bytes]:
        what = f"get s3://{self.bucket}/{key}"
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key, **self._version(version_id))["Body"]
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                raise BlobNotFoundError(key) from None
            raise translate(exc, what) from exc
        try:
            # The body arrives while it is read: a read timeout or a reset connection surfaces here.
            yield from body.iter_chunks(chunk_size)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"{what} (reading the body)") from exc
        finally:
            body.close()

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            # Each page is a request, made as the iteration reaches it.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"list s3://{self.bucket}/{prefix}") from exc

    def describe(self) -> str:
        return f"s3://{self.bucket}"

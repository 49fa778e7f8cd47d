"""What logs show of a request's path: an upload URL's path is its credential (whoever holds it may upload
until it expires), so the access log (`docflow serve`) and the error log (api.errors) show
/uploads/<redacted> in its place."""

from __future__ import annotations


def redact_upload_path(path: str) -> str:
    if path.startswith("/uploads/"):
        return "/uploads/<redacted>"
    return path

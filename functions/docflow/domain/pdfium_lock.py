"""PDFium is not thread-safe: two threads inside it at once corrupt its heap (a double free, a segfault).
Validation, text extraction and page previews all call it, and one process may run them on several threads
(`docflow serve`: the request threads, the synchronous predict pool, the in-process pipeline worker). Every
call into PDFium, in any thread, holds this lock; the work around it (Tesseract, Pillow) runs outside it.
Re-entrant, so a helper called under it may take it again."""

from __future__ import annotations

import threading

PDFIUM_LOCK = threading.RLock()

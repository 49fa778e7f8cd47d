"""`docflow serve` over real HTTP on loopback: a server process with worker processes, real documents (made by
docflow.samples), real Tesseract and ONNX; and a stop in the middle of the work that loses nothing."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from docflow.samples import EMAIL, LETTER, MEMO, REPORT, render_page, text_pdf

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).parents[1] / "fixtures" / "corpus"
KEY = "e2e-serve-key"
TERMINAL = {"CLASSIFIED", "NEEDS_REVIEW", "REJECTED", "DUPLICATE", "FAILED"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.getbasetemp() / "api-tiny-model"
    if not (out / "model.onnx").is_file():
        from docflow_training.train import TrainConfig, train_model

        config = TrainConfig(seed=7, vocab_size=400, c_grid=(1.0, 10.0), cv_folds=3, holdout_fraction=0.25)
        train_model(CORPUS, out, config)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One `python -m docflow.api.server` process (its own session, so its workers go with it)."""

    def __init__(self, home: Path, model: Path, log: Path, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            "DOCFLOW_HOME": str(home),
            "DOCFLOW_MODEL_DIR": str(model),
            "DOCFLOW_API_KEY": KEY,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, workers: int = 2) -> Server:
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "docflow.api.server", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not become healthy: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):  # workers left behind belong to the server's session
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def server_factory(tmp_path: Path, tiny_model: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(**env: str) -> Server:
        server = Server(tmp_path / "home", tiny_model, tmp_path / "server.log", **env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


def _png(text: str) -> bytes:
    buf = io.BytesIO()
    render_page(text).save(buf, "PNG")
    return buf.getvalue()


def _poll(client: httpx.Client, document_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/documents/{document_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["terminal"] and all(u["status"] in TERMINAL for u in body["uploads"]):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.25)


def test_upload_poll_and_docs_over_http(server_factory: Any) -> None:
    server = server_factory().start(workers=2)
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as client:
        # Swagger UI and the schema are there
        docs = httpx.get(f"{server.url}/docs", timeout=10)
        assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()
        schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        expected = {"/documents", "/documents/{document_id}", "/predict/text", "/upload-and-predict"}
        assert expected <= set(schema["paths"])
        # Without the key: refused, no data
        refused = httpx.get(f"{server.url}/documents", timeout=10)
        assert refused.status_code == 401 and "items" not in refused.json()
        # A scan (OCR) and a born-digital PDF are uploaded, then polled to their outcome
        scan = client.post("/documents", files={"file": ("letter-scan.png", _png(LETTER), "image/png")})
        memo = client.post("/documents", files={"file": ("memo.pdf", text_pdf([MEMO]), "application/pdf")})
        assert scan.status_code == memo.status_code == 202
        letter = _poll(client, scan.json()["document_id"])
        assert letter["status"] in ("CLASSIFIED", "NEEDS_REVIEW") and letter["text_source"] == "ocr"
        assert letter["ocr_confidence"] and letter["prediction"]["predicted_class"]
        pdf = _poll(client, memo.json()["document_id"])
        assert pdf["text_source"] == "pdf_text"
        # The synchronous endpoint answers over HTTP too (seed-style query options, real OCR)
        sync = client.post(
            "/upload-and-predict?ocr_language=eng&return_all_scores=true",
            files={"file": ("letter.png", _png(LETTER), "image/png")},
        )
        assert sync.status_code == 200, sync.text
        assert sync.json()["text_source"] == "ocr" and sync.json()["all_scores"]
        listed = client.get("/documents").json()["items"]
        assert {d["document_id"] for d in listed} == {letter["document_id"], pdf["document_id"]}
        # A large-file upload URL: its token is a credential, so the access log must not show it
        big = text_pdf([MEMO, LETTER])
        grant = client.post("/documents/upload-url", json={"file_name": "big.pdf"}).json()
        token = grant["url"].rsplit("/", 1)[-1]
        assert httpx.put(grant["url"], content=big, timeout=30).status_code == 202
    assert server.stop() == 0
    log = server.log.read_text()
    assert "PUT /uploads/<redacted>" in log and token not in log


def test_a_stop_in_the_middle_loses_no_accepted_upload(server_factory: Any, tmp_path: Path) -> None:
    # No grace: documents in flight at the stop are recorded and re-run; queued ones wait in the journal.
    server = server_factory(DOCFLOW_API_SHUTDOWN_GRACE="0").start(workers=1)
    texts = [LETTER, MEMO, EMAIL, REPORT]
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as client:
        ids = []
        for i, text in enumerate(texts):
            response = client.post("/documents", files={"file": (f"scan-{i}.png", _png(text), "image/png")})
            assert response.status_code == 202
            ids.append(response.json()["document_id"])
    # When the server is stopped while the single worker is busy with the first scan
    assert server.stop() == 0
    journal = tmp_path / "home" / "api" / "queue"
    left = list(journal.glob("*.json"))
    assert left, "the stop came after all the work: make the documents slower"
    # And started again
    server.start(workers=1)
    # Documents stopped in the middle are FAILED ("retried when the server starts again") until their
    # re-run; the journal empties when every accepted upload has been run again
    deadline = time.monotonic() + 240
    while list(journal.glob("*.json")):
        assert time.monotonic() < deadline, "the re-queued uploads never finished"
        time.sleep(0.2)
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as client:
        outcomes = [_poll(client, document_id) for document_id in ids]
    # Then every accepted upload reached its outcome, and none was left failed by the stop
    assert [o["status"] for o in outcomes if o["status"] not in ("CLASSIFIED", "NEEDS_REVIEW")] == []
    assert all(o["text_source"] == "ocr" for o in outcomes)
    assert list(journal.glob("*.json")) == []
    assert server.stop() == 0


def test_serve_will_not_listen_publicly_without_a_key(tiny_model: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOCFLOW_API_KEY"}
    env.update(DOCFLOW_HOME=str(tmp_path), DOCFLOW_MODEL_DIR=str(tiny_model))
    proc = subprocess.run(
        [sys.executable, "-m", "docflow.api.server", "--host", "0.0.0.0", "--port", str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "DOCFLOW_API_KEY" in proc.stderr and "Traceback" not in proc.stderr

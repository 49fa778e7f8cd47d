"""POST /predict/text over real HTTP (`docflow serve` on loopback) against the raw model in a loop, one run.

    .venv/bin/python bench/api_throughput.py [--requests 500] [--threads 8] [--data ../shared/data]

The texts are the first documents of the Tobacco-3482 OCR corpus (or the test fixtures' corpus when the
shared data is absent), cycled to the request count. The model is DOCFLOW_MODEL_DIR, else the default model
(`make model`). Two measurements, on the same texts and model:

1. raw: TextClassifier.predict(text) in a loop, one thread — documents/s;
2. served: the same texts as POST /predict/text JSON bodies to a `docflow serve` process on 127.0.0.1, from a
   pool of client threads with keep-alive connections, a bounded loop of --requests — requests/s, with latency.

Prints both, and writes bench/results/api_throughput.json. Traffic goes to loopback only and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KEY = "bench-key"


def texts(data: Path, count: int) -> list[str]:
    corpus = data / "tobacco3482"
    if not corpus.is_dir():
        corpus = REPO / "tests" / "fixtures" / "corpus"
    files = sorted(corpus.rglob("*.txt"))[: max(count, 1)]
    # Blank OCR outputs are refused by the API (422); the comparison is over classifiable texts.
    loaded = [t for t in (f.read_text(encoding="utf-8", errors="replace") for f in files) if t.strip()]
    if not loaded:
        sys.exit(f"no non-empty .txt documents under {corpus}")
    return [loaded[i % len(loaded)] for i in range(count)]


def model_dir() -> Path:
    explicit = os.environ.get("DOCFLOW_MODEL_DIR")
    path = Path(explicit) if explicit else REPO / "functions" / "docflow" / "default_model"
    if not (path / "model.onnx").is_file():
        sys.exit(f"no model at {path}: run `make model` or set DOCFLOW_MODEL_DIR")
    return path


def raw(model: Path, batch: list[str]) -> float:
    from docflow.domain.classifier import TextClassifier

    classifier = TextClassifier(model)
    for text in batch[:20]:  # warm-up, as the server gets
        classifier.predict(text)
    started = time.perf_counter()
    for text in batch:
        classifier.predict(text)
    return len(batch) / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def served(model: Path, batch: list[str], threads: int) -> dict[str, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DOCFLOW_HOME": home, "DOCFLOW_MODEL_DIR": str(model), "DOCFLOW_API_KEY": KEY}
        server = subprocess.Popen(
            [sys.executable, "-m", "docflow.api.server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("the server did not start")
                time.sleep(0.2)

            local = threading.local()

            def call(text: str) -> float:
                client = getattr(local, "client", None)
                if client is None:
                    client = local.client = httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=30)
                started = time.perf_counter()
                response = client.post("/predict/text", json={"text": text})
                response.raise_for_status()
                return time.perf_counter() - started

            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(call, batch[: threads * 5]))  # warm-up: connections, model load
                started = time.perf_counter()
                latencies = list(pool.map(call, batch))
                elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)
    latencies.sort()
    return {
        "requests_per_s": len(batch) / elapsed,
        "latency_p50_ms": statistics.median(latencies) * 1000,
        "latency_p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DOCFLOW_DATA_DIR", REPO.parent / "shared" / "data"))
    )
    args = parser.parse_args()
    model = model_dir()
    batch = texts(args.data, args.requests)
    mean_chars = sum(map(len, batch)) / len(batch)
    raw_rate = raw(model, batch)
    http = served(model, batch, args.threads)
    result = {
        "requests": len(batch),
        "client_threads": args.threads,
        "mean_text_chars": round(mean_chars),
        "model_dir": str(model),
        "raw_documents_per_s": round(raw_rate, 1),
        "served_requests_per_s": round(http["requests_per_s"], 1),
        "served_latency_p50_ms": round(http["latency_p50_ms"], 2),
        "served_latency_p95_ms": round(http["latency_p95_ms"], 2),
        "served_over_raw": round(http["requests_per_s"] / raw_rate, 3),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"raw model (TextClassifier.predict, 1 thread): {raw_rate:8.1f} documents/s")
    print(
        f"served (POST /predict/text, HTTP loopback, {args.threads} client threads): "
        f"{http['requests_per_s']:8.1f} requests/s  (p50 {http['latency_p50_ms']:.1f} ms, "
        f"p95 {http['latency_p95_ms']:.1f} ms)"
    )
    print(f"served / raw: {result['served_over_raw']:.2f}  ({len(batch)} texts, mean {mean_chars:.0f} chars)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api_throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Classifier latency: per-document classify time (one thread) and cold start.

    .venv/bin/python bench/classify_latency.py [--model-dir DIR] [--data ../shared/data] [--n 300]

- classify p50 / p99: ``TextClassifier.predict`` on one document at a time (the Classify step's call,
  single-threaded ONNX session), over real corpus texts (Tobacco-3482, all lengths, cycled to n);
  the first call is warm-up and not counted. With a scan head, each call also gets a page layout (the
  head's average page), as a page read by OCR does, so the head's arithmetic is in the time.
- cold start: a fresh Python process that imports the runtime and loads the model (what a Lambda
  cold start or an embedded worker pays), median of 3 processes; reported as import and load apart.
- model size: the model directory's bytes.

Writes bench/results/classify_latency.json. Targets (issue 4): p50 <= 50 ms, cold start <= 1 s,
model files <= 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

COLD = """
import json, sys, time
t0 = time.perf_counter()
from docflow.domain.classifier import TextClassifier
t1 = time.perf_counter()
c = TextClassifier(sys.argv[1])
t2 = time.perf_counter()
c.predict("Memorandum. To: all staff. From: the director. Subject: budget review.")
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2}))
"""


def texts_from(data: Path, n: int) -> list[str]:
    files = sorted((data / "tobacco3482").rglob("*.txt"))
    if not files:
        return ["Memorandum to all staff about the budget review meeting on Tuesday. " * k for k in range(1, 60)]
    step = max(1, len(files) // n)
    return [f.read_bytes().decode("utf-8", "replace") for f in files[::step][:n]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    from docflow.settings import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DOCFLOW_DATA_DIR") or REPO.parent / "shared" / "data")
    )
    parser.add_argument("--n", type=int, default=300, help="documents timed")
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_THREAD_LIMIT": "1"}
    colds = []
    for _ in range(args.cold_runs):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", COLD, str(args.model_dir)], capture_output=True, text=True, env=env, check=True
        )
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run["process_s"] = time.perf_counter() - started
        colds.append(run)

    from docflow.domain.classifier import TextClassifier
    from docflow.domain.layout import LAYOUT_VERSION

    classifier = TextClassifier(args.model_dir)
    head = classifier.scan_head
    layout = (dict(zip(head.features, head.spec.mean, strict=True)), LAYOUT_VERSION) if head else None
    texts = texts_from(args.data, args.n)
    classifier.predict(texts[0], layout)
    timings = []
    for text in texts:
        started = time.perf_counter()
        classifier.predict(text, layout)
        timings.append(time.perf_counter() - started)

    size = sum(p.stat().st_size for p in args.model_dir.iterdir() if p.is_file())
    result = {
        "model": f"{classifier.name} {classifier.version}",
        "architecture": classifier.config.model_extra.get("architecture") if classifier.config.model_extra else None,
        "documents": len(timings),
        "scan_head": head is not None,
        "mean_chars": round(statistics.mean(len(t) for t in texts)),
        "classify_p50_ms": round(1000 * statistics.median(timings), 2),
        "classify_p99_ms": round(1000 * percentile(timings, 99), 2),
        "classify_max_ms": round(1000 * max(timings), 2),
        "cold_import_s": round(statistics.median(c["import_s"] for c in colds), 3),
        "cold_load_s": round(statistics.median(c["load_s"] for c in colds), 3),
        "cold_start_s": round(statistics.median(c["import_s"] + c["load_s"] for c in colds), 3),
        "cold_first_predict_s": round(statistics.median(c["first_predict_s"] for c in colds), 3),
        "cold_process_s": round(statistics.median(c["process_s"] for c in colds), 3),
        "model_bytes": size,
    }
    print(
        f"classify: p50 {result['classify_p50_ms']} ms, p99 {result['classify_p99_ms']} ms "
        f"(one thread, {len(timings)} docs, mean {result['mean_chars']} chars)\n"
        f"cold start: {result['cold_start_s']} s (import {result['cold_import_s']} s + load "
        f"{result['cold_load_s']} s; whole process {result['cold_process_s']} s)\n"
        f"model files: {size / 1e6:.1f} MB"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classify_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where `docflow process` spends its time, and how its speed holds as the batch grows.

    .venv/bin/python bench/pipeline_share.py [--data ../shared/data] [--workers 2] [--sizes 10,100,1000]

1. Share of time outside OCR, on the fixed real page set of bench/throughput.py (16 RVL-CDIP scans + 20 FUNSD
   forms): `docflow process --json` into a fresh DOCFLOW_HOME, then from the record store and the stored
   text: OCR seconds = the per-page seconds ExtractText records (decode, upscale, Tesseract); document
   seconds = each document's wall time in its worker (ingest, validate, extract, classify, records).
   Reported per document (1 - OCR / document seconds, summed) and end to end (1 - OCR / (wall x workers),
   which also charges process start-up, the model load and idle workers at the end).
2. pages/s at 10, 100 and 1,000 documents: distinct one-page PNG scans (a line of large type, OCR'd for
   real, ~0.1 s each), each size in a fresh DOCFLOW_HOME: pages/s over the wall time of the whole command
   (which includes a fixed ~3 s start-up), and over the documents' own times in the workers.

Writes bench/results/pipeline_share.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOCFLOW = REPO / ".venv" / "bin" / "docflow"
sys.path[:0] = [str(REPO / "functions"), str(REPO)]


def docflow_process(paths: list[Path], home: Path, workers: int) -> tuple[float, list[dict[str, Any]]]:
    env = {**os.environ, "DOCFLOW_HOME": str(home)}
    env.pop("DOCFLOW_FAULTS", None)
    # One folder of links to the inputs, as a user passes a folder.
    folder = home.parent / f"in-{home.name}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        (folder / f"{i:05d}-{p.name}").symlink_to(p)
    started = time.perf_counter()
    proc = subprocess.run(
        [str(DOCFLOW), "process", str(folder), "--json", "--workers", str(workers)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    return seconds, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def outside_ocr_share(pages: list[Path], workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        wall, rows = docflow_process(pages, home, workers)
        db = sqlite3.connect(home / "docflow.sqlite3")
        steps: dict[str, float] = {}
        for (data,) in db.execute("SELECT data FROM documents"):
            for step, seconds in json.loads(data).get("timings", {}).items():
                steps[step] = steps.get(step, 0.0) + seconds
        db.close()
        ocr = 0.0
        for text_file in (home / "blobs" / "text").glob("*.json"):
            ocr += sum(p["seconds"] for p in json.loads(text_file.read_text())["pages"])
    documents = sum(r["seconds"] for r in rows)
    return {
        "documents": len(rows),
        "pages": sum(r.get("pages") or 0 for r in rows),
        "workers": workers,
        "wall_s": round(wall, 2),
        "document_s": round(documents, 2),
        "ocr_s": round(ocr, 2),
        "step_s": {k: round(v, 2) for k, v in steps.items()},
        "outside_ocr_share_per_document": round(1 - ocr / documents, 4),
        "outside_ocr_share_end_to_end": round(1 - ocr / (wall * workers), 4),
        "seconds_per_page_ocr": round(ocr / max(1, len(rows)), 3),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},
    }


def tiny_scans(directory: Path, n: int) -> list[Path]:
    from PIL import Image, ImageDraw

    from docflow.samples import sample_font

    directory.mkdir(parents=True, exist_ok=True)
    font = sample_font(36)
    words = ("MEMO", "LETTER", "INVOICE", "REPORT", "FORM", "NOTICE")
    paths = []
    for i in range(n):
        image = Image.new("L", (560, 120), 255)
        ImageDraw.Draw(image).text((20, 35), f"{words[i % len(words)]} {i:05d}", fill=0, font=font)
        path = directory / f"scan-{i:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def scaling(sizes: list[int], workers: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        scans = tiny_scans(Path(tmp) / "scans", max(sizes))
        for n in sizes:
            wall, rows = docflow_process(scans[:n], Path(tmp) / f"home-{n}", workers)
            per_doc = [r["seconds"] for r in rows]
            out.append(
                {
                    "documents": n,
                    "rows": len(rows),
                    "wall_s": round(wall, 2),
                    "pages_per_s": round(n / wall, 2),
                    # Without the command's fixed start-up (interpreter, spawned workers, model load):
                    "pages_per_s_in_workers": round(n * workers / sum(per_doc), 2),
                    "document_s_median": round(statistics.median(per_doc), 3),
                    "classified": sum(r["status"] in ("CLASSIFIED", "NEEDS_REVIEW") for r in rows),
                }
            )
    return out


def main() -> int:
    from bench.throughput import page_set

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DOCFLOW_DATA_DIR", REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    share = outside_ocr_share(page_set(args.data), args.workers)
    print(
        f"outside OCR: {100 * share['outside_ocr_share_per_document']:.1f} % per document, "
        f"{100 * share['outside_ocr_share_end_to_end']:.1f} % end to end ({share['pages']} pages, "
        f"{share['wall_s']} s)"
    )
    scale = scaling([int(s) for s in args.sizes.split(",")], args.workers)
    for row in scale:
        print(
            f"{row['documents']:>5} documents: {row['pages_per_s']:.2f} pages/s wall ({row['wall_s']} s), "
            f"{row['pages_per_s_in_workers']:.2f} pages/s in the workers"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"outside_ocr": share, "scaling": scale}
    (RESULTS / "pipeline_share.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

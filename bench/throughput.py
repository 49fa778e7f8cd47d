"""`docflow process` throughput against one raw `tesseract` process over the same pages.

    .venv/bin/python bench/throughput.py [--data ../shared/data] [--workers N]

The page set is fixed: the 16 RVL-CDIP scans and the first 20 FUNSD forms from the shared dev data
(36 single-page, ~100-dpi scans). Three runs, in this order, on the same machine:

1. raw tesseract, default threads — one `tesseract` process given the list of all pages (its own OpenMP
   threads on every core), the way a user would run it by hand;
2. raw tesseract, OMP_THREAD_LIMIT=1 — the same single process, single-threaded;
3. docflow process --workers N (default: cores) — validation, upscale, OCR, classification and
   storage for every document, in a fresh DOCFLOW_HOME.

Prints pages/s of each and docflow's ratio to each raw run; writes bench/results/throughput.json.
Docflow does more work per page (it upscales low-resolution scans 2x before OCR, and classifies).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def page_set(data: Path) -> list[Path]:
    dev = data / "dev"
    pages = sorted((dev / "rvlcdip_samples_rishidarkdevil").rglob("*.png"))
    pages += sorted((dev / "funsd" / "form").glob("*.png"))[:20]
    if not pages:
        sys.exit(f"no dev scans under {dev} (set --data or DOCFLOW_DATA_DIR)")
    return pages


def raw_tesseract(pages: list[Path], single_thread: bool) -> float:
    env = dict(os.environ)
    env.pop("OMP_THREAD_LIMIT", None)
    if single_thread:
        env["OMP_THREAD_LIMIT"] = "1"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(str(p) for p in pages) + "\n")
    started = time.perf_counter()
    subprocess.run(["tesseract", listing.name, "stdout"], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def docflow(pages: list[Path], workers: int) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DOCFLOW_HOME": home}
        started = time.perf_counter()
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "docflow"), "process", *map(str, pages), "--json", "--workers", str(workers)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
    return seconds, [json.loads(line) for line in proc.stdout.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DOCFLOW_DATA_DIR", REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    pages = page_set(args.data)
    n = len(pages)
    print(f"{n} pages, {os.cpu_count()} cores, docflow --workers {args.workers}")

    raw_default = raw_tesseract(pages, single_thread=False)
    raw_single = raw_tesseract(pages, single_thread=True)
    docflow_s, rows = docflow(pages, args.workers)
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1

    result = {
        "pages": n,
        "cores": os.cpu_count(),
        "workers": args.workers,
        "raw_tesseract_default_threads": {"seconds": round(raw_default, 2), "pages_per_s": round(n / raw_default, 3)},
        "raw_tesseract_omp1": {"seconds": round(raw_single, 2), "pages_per_s": round(n / raw_single, 3)},
        "docflow_process": {
            "seconds": round(docflow_s, 2),
            "pages_per_s": round(n / docflow_s, 3),
            "statuses": statuses,
        },
        "ratio_vs_raw_default": round(raw_default / docflow_s, 2),
        "ratio_vs_raw_omp1": round(raw_single / docflow_s, 2),
    }
    print(f"{'run':<34}{'seconds':>9}{'pages/s':>9}")
    for name in ("raw_tesseract_default_threads", "raw_tesseract_omp1", "docflow_process"):
        print(f"{name:<34}{result[name]['seconds']:>9.1f}{result[name]['pages_per_s']:>9.3f}")
    print(f"docflow / raw tesseract (default threads): {result['ratio_vs_raw_default']}x")
    print(f"docflow / raw tesseract (OMP_THREAD_LIMIT=1): {result['ratio_vs_raw_omp1']}x")
    print(f"statuses: {statuses}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

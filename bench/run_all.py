"""Every benchmark, one after the other, then one table and one JSON (`make bench`).

    .venv/bin/python bench/run_all.py [--only NAME,NAME] [--docs 1000] [--pages 300]

Runs, each as its own process (so one's imports and caches do not flatter the next): ocr_cer, throughput,
classify_latency, api_throughput (existing), pipeline_share (outside-OCR share; pages/s at 10/100/1,000
documents), cold_start (every handler), fault_run (1,000 documents, 5 % transient and 1 % permanent
faults, audited from the record store), big_pdf (a 300-page scan: time, peak RSS; the heaviest text
layer accepted: peak RSS), big_raster (the largest accepted image of each kind: peak RSS), aws_cost
(paper estimate from the measured step times), then quality (the
classifier end to end per source, through `docflow eval`; * = precision on the documents not sent to
review), then review_queue (the review page in headless Chromium: first document with 1,000 queued; 50
real scans cleared by keyboard). Each writes
bench/results/<name>.json; this collects them into bench/results/bench.json with the machine's load
before and after (timings on a busy machine are slower).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"


def _run(name: str, *args: str) -> float:
    print(f"== {name} {' '.join(args)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], cwd=REPO, check=False)
    if proc.returncode != 0:
        print(f"!! {name} exited {proc.returncode}", flush=True)
    return time.perf_counter() - started


def _capture(name: str, *args: str) -> dict[str, Any]:
    """For the scripts that print their JSON instead of writing it."""
    print(f"== {name} {' '.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode not in (0, 1):
        print(proc.stderr[-3000:], flush=True)
        return {"error": f"exit {proc.returncode}"}
    out = proc.stdout
    result: dict[str, Any] = json.loads(out[out.index("{") :])
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return data


def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []

    def add(metric: str, value: Any, target: str = "") -> None:
        rows.append((metric, str(value), target))

    # Real scans first: what a user's scans get. The scan head is fitted on rvl_dev, so its figures there are
    # cross-validated (bench/quality.py); the text model alone is fitted on nothing there.
    if rs := r.get("quality", {}).get("real_scans"):
        for name, key in (
            ("text model alone", "text_only"),
            ("scan head, cross-validated", "scan_head_cross_validated"),
        ):
            s = rs[key]
            add(
                f"real scans rvl_dev, {name} ({s['in_scope']} in-scope / {s['out_of_scope']} out-of-scope): "
                "top-1, macro-F1, classified, precision (out of scope counted), out-of-scope classified",
                f"{s['top1']:.3f}, {s['macro_f1']:.3f}, {s['classified_share']:.0%}, "
                f"{s['precision_all_classified'] or 0:.3f}, {s['out_of_scope_classified_share']:.0%}",
                ">= 0.80, 0.78, -, 0.95, <= 10 %",
            )
    if ocr := r.get("ocr_cer", {}).get("summary"):
        add("OCR CER, FUNSD test forms (overall)", f"{ocr['cer_overall']:.3f}")
    if tp := r.get("throughput"):
        add("docflow process pages/s (36 real scans)", tp["docflow_process"]["pages_per_s"])
        add("raw tesseract pages/s (same pages, default threads)", tp["raw_tesseract_default_threads"]["pages_per_s"])
        add("docflow / raw tesseract", f"{tp['ratio_vs_raw_default']}x", ">= 1.8x")
    if ps := r.get("pipeline_share", {}).get("outside_ocr"):
        add("time outside OCR, per document", f"{100 * ps['outside_ocr_share_per_document']:.1f} %", "<= 5 %")
        add("time outside OCR, end to end (start-up, idle)", f"{100 * ps['outside_ocr_share_end_to_end']:.1f} %")
        add("  step seconds (36 docs) vs OCR seconds", f"{ps['step_s']} vs {ps['ocr_s']}")
    if cl := r.get("classify_latency"):
        add("classify p50 / p99 (one thread)", f"{cl['classify_p50_ms']} / {cl['classify_p99_ms']} ms")
    for name, cs in r.get("cold_start", {}).items():
        add(
            f"cold start {name} (import + setup; process)",
            f"{cs['import_s'] + cs['setup_s']:.2f} s; {cs['process_s']:.2f} s",
        )
    if api := r.get("api_throughput"):
        add(
            "API /predict/text req/s vs raw model docs/s",
            f"{api['served_requests_per_s']} vs {api['raw_documents_per_s']}",
        )
    for row in r.get("pipeline_share", {}).get("scaling", []):
        add(
            f"pages/s at {row['documents']} docs (tiny scans): wall; in workers; median s/doc",
            f"{row['pages_per_s']}; {row.get('pages_per_s_in_workers')}; {row['document_s_median']}",
            "flat",
        )
    if (fr := r.get("fault_run")) and "documents" in fr:
        add(
            f"fault run {fr['documents']} docs: statuses",
            ", ".join(f"{k} {v}" for k, v in sorted(fr["statuses"].items())),
        )
        add(
            "fault run: transient injected/recovered, permanent injected/FAILED",
            f"{fr['transient_injected']}/{fr['transient_recovered']}, {fr['permanent_injected']}/{fr['failed']}",
        )
        add(
            "fault run: lost, duplicated, problems",
            f"{fr['lost']}, {fr['duplicated']}, {len(fr['problems'])}",
            "0, 0, 0",
        )
        add("fault run: wall seconds", fr["seconds"])
    if bp := r.get("big_pdf"):
        big = next((v for k, v in bp.items() if k.startswith("pdf_")), None)
        base = bp.get("baseline_1_page")
        if big and base:
            add(f"{big['pages']}-page scanned PDF: seconds, status", f"{big['seconds']} s, {big['status']}")
            add("  peak RSS vs a 1-page run", f"{big['peak_rss_mb']} MB vs {base['peak_rss_mb']} MB")
        if heavy := bp.get("heaviest_text_layer"):
            add(
                f"heaviest text layer accepted ({heavy['pages']} pages x {heavy['page_content_bytes'] / 2**20:.2f} "
                "MiB): peak RSS",
                f"{heavy['peak_rss_mb']} MB",
                "<= 512",
            )
    for name, run in r.get("big_raster", {}).items():
        add(
            f"largest accepted raster, {name.replace('_', ' ')}: peak RSS (self + tesseract child), status",
            f"{run['peak_rss_self_plus_child_mb']} MB, {run['status']}",
            "<= 512" if name != "baseline_1mpx_png" else "",
        )
    if cost := r.get("aws_cost"):
        for name in ("single_page_scans", "300_page_pdfs"):
            c = cost[name]
            add(
                f"AWS $ per 1,000 pages ({name.replace('_', ' ')})",
                f"{c['usd_total']:.3f}",
                f"prices {cost['prices_as_of']}",
            )
    for source, q in r.get("quality", {}).get("sources", {}).items():
        if source == "rvl_dev":
            continue
        precision = q["precision_not_reviewed"]
        add(
            f"classifier end to end, {source} ({q['documents']} docs): accuracy, macro-F1, review, precision*",
            f"{q['accuracy']:.3f}, {q['macro_f1']:.3f}, {q['review_rate']:.0%}, "
            + ("-" if precision is None else f"{precision:.3f}"),
            ">= 0.80, 0.78, -, 0.95",
        )
    if first := r.get("review_queue", {}).get("first_document"):
        add(
            f"review page: first document shown, {first['queued']:,} queued (median of {first['loads']} loads)",
            f"{first['first_image_ms_median']} ms",
        )
    if (scans := r.get("review_queue", {}).get("real_scans", {})) and "queued" in scans:
        add(
            f"review page: {scans['queued']} real scans by keyboard: s per decision, left, decisions, feedback",
            f"{scans['seconds_per_decision_median']} s, {scans['queue_left']}, {scans['decisions_in_store']}, "
            f"{scans['feedback_examples']}",
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated subset of the benchmarks")
    parser.add_argument("--docs", type=int, default=1000, help="documents in the fault run")
    parser.add_argument("--pages", type=int, default=300, help="pages of the big PDF")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    def wanted(name: str) -> bool:
        return not only or name in only

    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    seconds: dict[str, float] = {}
    for name in ("ocr_cer", "throughput", "classify_latency", "api_throughput", "pipeline_share", "cold_start"):
        if wanted(name):
            seconds[name] = _run(name)
    if wanted("fault_run"):
        started = time.perf_counter()
        _capture("fault_run", "--docs", str(args.docs))
        seconds["fault_run"] = time.perf_counter() - started
    if wanted("big_pdf"):
        started = time.perf_counter()
        _capture("big_pdf", "--pages", str(args.pages))
        seconds["big_pdf"] = time.perf_counter() - started
    if wanted("big_raster"):
        started = time.perf_counter()
        _capture("big_raster")
        seconds["big_raster"] = time.perf_counter() - started
    if wanted("aws_cost") and (RESULTS / "pipeline_share.json").exists():
        seconds["aws_cost"] = _run("aws_cost")
    if wanted("quality"):
        seconds["quality"] = _run("quality")
    if wanted("review_queue"):
        seconds["review_queue"] = _run("review_queue")

    names = ("ocr_cer", "throughput", "classify_latency", "api_throughput", "pipeline_share", "cold_start")
    others = ("fault_run", "big_pdf", "big_raster", "aws_cost", "quality", "review_queue")
    results = {name: _load(name) for name in (*names, *others)}
    machine = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "bench_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    rows = table(results)
    width = max(len(m) for m, _, _ in rows) if rows else 10
    print(f"\n{'metric':<{width}}  {'value':<28}  target")
    for metric, value, target in rows:
        print(f"{metric:<{width}}  {value:<28}  {target}")
    print(
        f"\nmachine: {machine['cpu_count']} cores, load average before {machine['load_average_before']}, "
        f"after {machine['load_average_after']}"
    )
    (RESULTS / "bench.json").write_text(json.dumps({"machine": machine, "table": rows, **results}, indent=2) + "\n")
    print(f"written: {RESULTS / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The review page in a real browser (Debian's headless Chromium via Selenium) against `docflow serve`.

    .venv/bin/python bench/review_queue.py [--queued 1000] [--loads 5] [--scans 50] [--data ../shared/data]

- first document: a fresh home with ``--queued`` NEEDS_REVIEW records written straight into its record store
  (SqliteRecordStore), each with its extracted text and one small PNG page to preview (the same PNG for
  all); `docflow serve --workers 0` (embedded, SQLite) on them. The page is signed in once, then loaded
  ``--loads`` times with the key already in the tab's sessionStorage; each load is timed in the page, from
  navigation start (performance.now()) to the first document's name shown and to its page image (a blob:
  URL) loaded, by a script Chromium runs before the page's own. Median and every load are reported, with
  the queue endpoint's own latency at that length (GET /review/queue, as the page asks, over HTTP).
- a person clearing a queue: ``--scans`` real labelled scans from rvl_dev (a fixed, class-stratified pick:
  round robin over the classes in name order, files in path order), processed by `docflow process` with
  DOCFLOW_REVIEW_THRESHOLD=1.0 so that every one is queued; then, by keyboard only, each shown document
  gets the key of its true class where that is one of the model's classes (GET /model), else X (none of
  these). Reported: seconds per decision (key press to the next document's image loaded), that the queue
  ends empty, the decisions in the record store (reviewer, label), how often the model's suggestion was
  the true class, and what the training data collection makes of them
  (docflow_training.feedback.collect_feedback, unchanged: out_of_scope labels as it treats them).
  Skipped when rvl_dev is not there.

Writes bench/results/review_queue.json and a screenshot of the page on a real scan,
bench/results/review-page.png. Needs /usr/bin/chromium and /usr/bin/chromedriver (apt chromium
chromium-driver); without them it writes {"skipped": ...} and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KEY = "bench-review-key"
REVIEWER = "bench reviewer"
OUT_OF_SCOPE = "out_of_scope"
DOCFLOW = [sys.executable, "-m", "docflow.cli"]
# Not inherited: the bench chooses its own home, model (the default one) and backend (local).
DROPPED_ENV = ("DOCFLOW_MODEL_DIR", "DOCFLOW_BACKEND", "DOCFLOW_DOCUMENTS_BUCKET", "DOCFLOW_TABLE_NAME")

# Run by Chromium before the page's own script on every load: when the first document is on screen, in the
# page's clock (milliseconds since navigation start).
FIRST_SHOWN_JS = """
(() => {
  const check = () => {
    const name = document.getElementById("doc-name");
    const img = document.getElementById("page-image");
    if (name && name.textContent && window.__firstName === undefined) window.__firstName = performance.now();
    if (img && (img.getAttribute("src") || "").startsWith("blob:") && img.complete && img.naturalWidth > 0) {
      window.__firstImage = performance.now();
      return;
    }
    setTimeout(check, 2);
  };
  check();
})();
"""
STATE_JS = """
const $ = (id) => document.getElementById(id);
const img = $("page-image");
return {
  name: $("doc-name").textContent,
  count: $("count").textContent,
  src: img.getAttribute("src") || "",
  loaded: img.complete && img.naturalWidth > 0,
  review_hidden: $("review").hidden,
  signin_hidden: $("signin").hidden,
  empty_hidden: $("empty").hidden,
  error: $("signin-error").textContent,
  suggested: $("suggested").textContent,
  page: $("page-label").textContent,
  text: $("text").textContent,
  flash: $("flash").textContent,
  title: document.title,
};
"""


# -- a server and a browser ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def docflow_env(home: Path, key: str = KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    return env | {"DOCFLOW_HOME": str(home), "DOCFLOW_API_KEY": key, **extra}


@dataclass(frozen=True)
class Served:
    """A running `docflow serve`: its URL, its process and its log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def died(self) -> str | None:
        """Why the server is gone (the end of its log), or None while it runs."""
        if self.process.poll() is None:
            return None
        return f"docflow serve exited ({self.process.returncode}): {self.log.read_text(errors='replace')[-2000:]}"


@contextlib.contextmanager
def serve(home: Path, key: str = KEY, **extra: str) -> Iterator[Served]:
    """`docflow serve --workers 0` on ``home`` with API key ``key`` (and any DOCFLOW_* in ``extra``), once it
    answers /health; stopped (SIGTERM, then SIGKILL) afterwards. tests/e2e/test_review_page.py uses it too."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home.parent / f"serve-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*DOCFLOW, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
            env=docflow_env(home, key, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docflow serve exited: {log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"docflow serve did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        served = Served(url, proc, log)
        yield served
        if why := served.died():
            raise RuntimeError(why)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # both given: Selenium would otherwise try to download them
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for a failure
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def state(driver: Any) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_script(STATE_JS)
    return result


def wait_for(driver: Any, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        page = state(driver)
        if check(page):
            return page
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:.0f} s for {what}; the page showed {page}")
        time.sleep(0.01)


def showing(page: dict[str, Any]) -> bool:
    return not page["review_hidden"] and bool(page["name"]) and page["src"].startswith("blob:") and page["loaded"]


def sign_in(driver: Any, url: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/review")
    wait_for(driver, lambda p: not p["signin_hidden"], "the sign-in form")
    driver.find_element(By.ID, "api-key").send_keys(KEY)
    driver.find_element(By.ID, "reviewer").send_keys(REVIEWER)
    driver.find_element(By.ID, "signin-submit").click()
    return wait_for(driver, showing, "the first document after signing in")


def waiting(page: dict[str, Any]) -> int | None:
    head = page["count"].split(" ")[0].replace(",", "")
    return int(head) if head.isdigit() else None


def ms(values: list[float]) -> float:
    return round(statistics.median(values), 1)


# -- (a) the first document with a long queue -------------------------------------------------------------------


def page_png() -> bytes:
    from PIL import Image

    from docflow.samples import LETTER, render_page

    buf = io.BytesIO()
    render_page(LETTER).resize((850, 1100), Image.Resampling.LANCZOS).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def fill_queue(home: Path, n: int, classes: list[str], model_version: str) -> None:
    """``n`` NEEDS_REVIEW records, the oldest first, each with its text; one PNG behind all their previews."""
    import hashlib

    from docflow.adapters.files import LocalBlobStore
    from docflow.adapters.sqlite import SqliteRecordStore
    from docflow.pipeline.steps import text_key
    from docflow.records import DocumentRecord
    from docflow.samples import EMAIL, LETTER, MEMO, REPORT
    from docflow.values import ExtractionResult, PageText, Status, utcnow

    records = SqliteRecordStore(home / "docflow.sqlite3")
    blobs = LocalBlobStore(home / "blobs")
    png = page_png()
    blob_key = "bench/review-queue-page.png"
    blobs.put(blob_key, png, "image/png")
    texts = (LETTER, MEMO, EMAIL, REPORT)
    start = utcnow() - timedelta(seconds=n)
    for i in range(n):
        document_id = hashlib.sha256(f"review-queue-bench-{i}".encode()).hexdigest()
        text = texts[i % len(texts)]
        extraction = ExtractionResult(
            pages=[PageText(page=1, text=text, source="ocr", confidence=91.0, words=len(text.split()), seconds=0.5)]
        )
        blobs.put(text_key(document_id), extraction.model_dump_json().encode(), "application/json")
        best, second = classes[i % len(classes)], classes[(i + 1) % len(classes)]
        scores = dict.fromkeys(classes, 0.02) | {best: 0.55, second: 0.25}
        moment = start + timedelta(seconds=i)
        records.put_document(
            DocumentRecord(
                document_id=document_id,
                status=Status.NEEDS_REVIEW,
                source=f"bench/queued-{i:04d}.png",
                blob_key=blob_key,
                media_type="image/png",
                size_bytes=len(png),
                pages=1,
                text_source="ocr",
                ocr_confidence=91.0,
                predicted_class=best,
                confidence=0.55,
                scores=scores,
                model_version=model_version,
                code="LOW_CONFIDENCE",
                reason=f"confidence 0.55 in {best!r} is below the review threshold",
                created_at=moment,
                updated_at=moment,
            )
        )


def first_document(queued: int, loads: int, root: Path) -> dict[str, Any]:
    import httpx

    home = root / "queue-home"
    with serve(home) as server:
        url = server.url
        model = httpx.get(f"{url}/model", headers={"x-api-key": KEY}, timeout=30).json()
        started = time.perf_counter()
        fill_queue(home, queued, model["classes"], model["model_version"])
        fill_s = time.perf_counter() - started
        with httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=30) as client:
            total = client.get("/review/queue").json()["total"]
            if total != queued:
                raise RuntimeError(f"{queued} records written, the queue says {total}")
            endpoint = []
            for _ in range(20):
                t0 = time.perf_counter()
                client.get("/review/queue", params={"limit": 20}).raise_for_status()
                endpoint.append(1000 * (time.perf_counter() - t0))
        with browser() as driver:
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_SHOWN_JS})
            sign_in(driver, url)  # the key into sessionStorage, the name into localStorage; not timed
            runs = []
            for _ in range(loads):
                t0 = time.perf_counter()
                driver.get(f"{url}/review")
                deadline = time.monotonic() + 60
                while driver.execute_script("return window.__firstImage") is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no document shown after a reload: {state(driver)}")
                    time.sleep(0.005)
                wall = 1000 * (time.perf_counter() - t0)
                timing = driver.execute_script(
                    "const nav = performance.getEntriesByType('navigation')[0];"
                    "return {name: window.__firstName, image: window.__firstImage,"
                    " dom: nav ? nav.domContentLoadedEventEnd : null};"
                )
                page = state(driver)
                if not page["signin_hidden"] or waiting(page) != queued:
                    raise RuntimeError(f"the reload did not show the queue of {queued}: {page}")
                runs.append(
                    {
                        "name_ms": round(timing["name"], 1),
                        "image_ms": round(timing["image"], 1),
                        "dom_content_loaded_ms": round(timing["dom"], 1) if timing["dom"] else None,
                        "wall_ms": round(wall, 1),
                    }
                )
            shown = state(driver)
    return {
        "queued": queued,
        "loads": loads,
        "records_written_s": round(fill_s, 2),
        "count_shown": shown["count"],
        "first_document_shown": shown["name"],
        "first_name_ms_median": ms([r["name_ms"] for r in runs]),
        "first_image_ms_median": ms([r["image_ms"] for r in runs]),
        "wall_ms_median": ms([r["wall_ms"] for r in runs]),
        "queue_endpoint_ms_median": ms(endpoint),
        "queue_endpoint_ms_max": round(max(endpoint), 1),
        "per_load": runs,
    }


# -- (b) a person clearing 50 real scans ----------------------------------------------------------------------------


def stratified(rvl: Path, n: int) -> list[tuple[Path, str]]:
    """``n`` scans: one of each class in turn (classes by name, files by path), until ``n`` or none left."""
    by_label: dict[str, list[Path]] = defaultdict(list)
    with (rvl / "labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            by_label[row["label"]].append(rvl / row["path"])
    queues = {label: sorted(paths) for label, paths in sorted(by_label.items())}
    picks: list[tuple[Path, str]] = []
    while len(picks) < n and any(queues.values()):
        for label, paths in queues.items():
            if paths and len(picks) < n:
                picks.append((paths.pop(0), label))
    return picks


def clear_queue(rvl: Path, n: int, root: Path) -> dict[str, Any]:
    import httpx
    from selenium.webdriver.common.by import By

    from docflow.adapters.files import LocalBlobStore
    from docflow.adapters.sqlite import SqliteRecordStore
    from docflow_training.feedback import collect_feedback

    picks = stratified(rvl, n)
    truth = {path.name: label for path, label in picks}
    if len(truth) != len(picks):
        raise RuntimeError("two picked scans share a file name: the page could not tell them apart")
    home = root / "scans-home"
    started = time.perf_counter()
    proc = subprocess.run(
        [*DOCFLOW, "process", *(str(p) for p, _ in picks), "--json"],
        env=docflow_env(home, DOCFLOW_REVIEW_THRESHOLD="1.0"),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    process_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"docflow process exited {proc.returncode}: {proc.stderr[-2000:]}")
    rows = {Path(r["source"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    statuses = Counter(r["status"] for r in rows.values())
    queued = {name: r for name, r in rows.items() if r["status"] == "NEEDS_REVIEW"}

    with serve(home) as server:
        url = server.url
        model = httpx.get(f"{url}/model", headers={"x-api-key": KEY}, timeout=30).json()
        classes = model["classes"]
        with browser() as driver:
            first = sign_in(driver, url)
            if waiting(first) != len(queued):
                raise RuntimeError(f"{len(queued)} queued, the page says {first['count']!r}")
            keys = {
                b.get_attribute("data-label"): b.find_element(By.TAG_NAME, "kbd").text.lower()
                for b in driver.find_elements(By.CSS_SELECTOR, "#classes button[data-label]")
            }
            RESULTS.mkdir(parents=True, exist_ok=True)
            screenshot = RESULTS / "review-page.png"
            time.sleep(0.2)  # the layout settled
            driver.save_screenshot(str(screenshot))
            body = driver.find_element(By.TAG_NAME, "body")
            seconds: list[float] = []
            chosen: dict[str, str] = {}
            shown_again: list[str] = []  # documents the page showed after they had been decided
            count_off: list[str] = []  # "N documents waiting" not the number actually left
            page = first
            clear_started = time.perf_counter()
            while page["empty_hidden"]:
                name = page["name"]
                if name in chosen:
                    shown_again.append(name)
                if waiting(page) != len(queued) - len(set(chosen)):
                    count_off.append(f"{page['count']!r} with {len(queued) - len(set(chosen))} left")
                label = truth[name]
                decision = label if label in classes else OUT_OF_SCOPE
                if decision != OUT_OF_SCOPE and decision not in keys:
                    raise RuntimeError(f"class {decision!r} has no key on the page")

                def next_shown(p: dict[str, Any], name: str = name) -> bool:
                    return not p["empty_hidden"] or (p["name"] != name and showing(p))

                t0 = time.perf_counter()
                body.send_keys(keys.get(decision, "x"))
                page = wait_for(driver, next_shown, f"the next document after {name!r}")
                seconds.append(time.perf_counter() - t0)
                chosen[name] = decision
            clear_s = time.perf_counter() - clear_started
        with httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=30) as client:
            left = client.get("/review/queue").json()["total"]

    records = SqliteRecordStore(home / "docflow.sqlite3")
    decided = 0
    right = 0
    reviewers: Counter[str] = Counter()
    for name, row in queued.items():
        live = [d for d in records.list_decisions(row["document_id"]) if d.undone_at is None]
        decided += len(live)
        reviewers.update(d.reviewer for d in live)
        record = records.get_document(row["document_id"])
        expected = truth[name] if truth[name] in classes else OUT_OF_SCOPE
        right += record is not None and record.status == "REVIEWED" and record.label == expected
    feedback = collect_feedback(records, LocalBlobStore(home / "blobs"))
    in_scope = [name for name in queued if truth[name] in classes]
    suggested_right = sum(queued[name]["predicted_class"] == truth[name] for name in in_scope)
    return {
        "scans": len(picks),
        "classes_picked": dict(sorted(Counter(truth.values()).items())),
        "in_model_classes": len(in_scope),
        "process_s": round(process_s, 1),
        "statuses": dict(statuses),
        "queued": len(queued),
        "decisions_by_keyboard": len(seconds),
        "shown_again_after_decided": shown_again,
        "count_shown_wrong": count_off,
        "decided_out_of_scope": sum(d == OUT_OF_SCOPE for d in chosen.values()),
        "queue_left": left,
        "decisions_in_store": decided,
        "decisions_by_reviewer": dict(reviewers),
        "records_with_the_chosen_label": right,
        "model_suggestion_was_true_class": f"{suggested_right}/{len(in_scope)}",
        "seconds_per_decision_median": round(statistics.median(seconds), 3) if seconds else None,
        "seconds_per_decision_p95": round(sorted(seconds)[int(0.95 * (len(seconds) - 1))], 3) if seconds else None,
        "seconds_per_decision_max": round(max(seconds), 3) if seconds else None,
        "clear_s": round(clear_s, 1),
        "feedback_examples": len(feedback.examples),
        "feedback_by_label": feedback.by_label(),
        # kept apart from the classes by collect_feedback (where this version of it does so)
        "feedback_out_of_scope": len(getattr(feedback, "out_of_scope", [])),
        "feedback_skipped": dict(feedback.skipped),
        "screenshot": str(screenshot.relative_to(REPO)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=1000, help="records waiting for the first-document timing")
    parser.add_argument("--loads", type=int, default=5, help="page loads timed")
    parser.add_argument("--scans", type=int, default=50, help="real scans a person clears")
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DOCFLOW_DATA_DIR") or REPO.parent / "shared" / "data")
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "review_queue.json"
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        result: dict[str, Any] = {"skipped": f"needs {CHROMIUM} and {CHROMEDRIVER} (apt chromium chromium-driver)"}
        print(f"review queue: skipped, {result['skipped']}")
        out.write_text(json.dumps(result, indent=2) + "\n")
        return 0

    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, check=False).stdout
    result = {"browser": version.strip(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="docflow-review-bench-") as tmp:
        first = first_document(args.queued, args.loads, Path(tmp))
        result["first_document"] = first
        print(
            f"first document, {first['queued']:,} queued (embedded, SQLite), median of {first['loads']} loads "
            f"from navigation start: name {first['first_name_ms_median']} ms, page image "
            f"{first['first_image_ms_median']} ms (wall {first['wall_ms_median']} ms); "
            f"GET /review/queue {first['queue_endpoint_ms_median']} ms; page said {first['count_shown']!r}"
        )
        rvl = args.data / "rvl_dev"
        if (rvl / "labels.csv").is_file():
            scans = clear_queue(rvl, args.scans, Path(tmp))
            result["real_scans"] = scans
            print(
                f"{scans['queued']} real scans queued ({scans['in_model_classes']} of the model's classes; "
                f"processed in {scans['process_s']} s), cleared by keyboard in {scans['clear_s']} s: "
                f"{scans['seconds_per_decision_median']} s a decision median "
                f"(p95 {scans['seconds_per_decision_p95']}, max {scans['seconds_per_decision_max']}), "
                f"{scans['decided_out_of_scope']} as none of these; {scans['decisions_by_keyboard']} key presses, "
                f"{len(scans['shown_again_after_decided'])} documents shown again after they were decided, "
                f"{len(scans['count_shown_wrong'])} times the count shown was wrong\n"
                f"queue left {scans['queue_left']}; decisions in the store {scans['decisions_in_store']} "
                f"{scans['decisions_by_reviewer']}; labels as chosen {scans['records_with_the_chosen_label']}; "
                f"model's suggestion was the true class {scans['model_suggestion_was_true_class']}\n"
                f"collect_feedback: {scans['feedback_examples']} examples {scans['feedback_by_label']}, "
                f"{scans['feedback_out_of_scope']} out of scope (kept apart), "
                f"skipped {scans['feedback_skipped'] or 'none'}\n"
                f"screenshot: {scans['screenshot']}"
            )
        else:
            result["real_scans"] = {"skipped": f"no {rvl}/labels.csv (set DOCFLOW_DATA_DIR)"}
            print(f"real scans: skipped, {result['real_scans']['skipped']}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

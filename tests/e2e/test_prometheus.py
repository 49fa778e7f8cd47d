"""Prometheus, end to end: the textfile a `docflow process` run leaves, `docflow serve`'s /metrics after uploads
and predictions, and a live check — a real Prometheus server (Debian's `prometheus`) scraping `docflow serve`
(and node_exporter's textfile collector for the CLI's runs) while documents flow, then every query of the
Grafana dashboard answered through Prometheus's HTTP API."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from docflow.samples import EMAIL, LETTER, MEMO, make_samples, render_page, text_pdf
from tests.e2e.test_serve import KEY, TERMINAL, Server, _free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "functions" / "docflow" / "default_model"
DASHBOARD = REPO / "observability" / "grafana" / "dashboards" / "docflow.json"
DOCFLOW = [sys.executable, "-m", "docflow.cli"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of `name` over the series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name and v:
            key = dict(ls)[label]
            out[key] = out.get(key, 0) + v
    return out


def _model() -> tuple[str, float]:
    metrics = json.loads((MODEL / "metrics.json").read_text())
    return metrics["model_version"], metrics["accuracy"]


def _png(text: str) -> bytes:
    buf = io.BytesIO()
    render_page(text).save(buf, "PNG")
    return buf.getvalue()


# -- the CLI's textfile ------------------------------------------------------------------------------------------


def test_process_run_leaves_exact_counts_in_the_textfile(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    make_samples(samples)
    home = tmp_path / "home"
    env = {**os.environ, "DOCFLOW_HOME": str(home), "DOCFLOW_MODEL_DIR": str(MODEL)}

    # When the samples go through `docflow process` with a pool of two worker processes
    proc = subprocess.run(
        [*DOCFLOW, "process", str(samples), "--json", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    textfile = home / "metrics" / "docflow.prom"
    assert f"metrics: {textfile}" in proc.stderr.replace("\n", "")

    # Then the textfile counts exactly what the rows say, whichever worker did the work
    got = parse(textfile.read_text())
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) >= {"CLASSIFIED", "REJECTED", "DUPLICATE"}
    assert by_label(got, "documents_processed_total", "status") == dict(statuses)
    assert total(got, "documents_uploaded_total") == len(rows) == 8
    classes = Counter(r["predicted_class"] for r in rows if r["predicted_class"])
    assert by_label(got, "predictions_total", "class") == dict(classes)
    version, accuracy = _model()
    assert {r["model_version"] for r in rows if r["predicted_class"]} == {version}
    assert total(got, "predictions_total", model_version=version) == sum(classes.values())
    assert total(got, "prediction_confidence_score_count", model_version=version) == sum(classes.values())
    assert total(got, "prediction_confidence_score_sum") == pytest.approx(
        sum(r["confidence"] for r in rows if r["predicted_class"])
    )
    ocred = [r for r in rows if r["text_source"] in ("ocr", "mixed")]
    assert total(got, "ocr_processing_seconds_count") == total(got, "ocr_confidence_score_count") == len(ocred)
    for status, n in statuses.items():
        assert total(got, "pipeline_seconds_count", status=status) == n
    assert got[("model_accuracy", frozenset({("model_version", version)}))] == pytest.approx(accuracy)


# -- docflow serve's /metrics -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("prometheus-serve")
    srv = Server(base / "home", MODEL, base / "server.log").start(workers=2)
    try:
        yield srv
    finally:
        srv.kill()


def scrape(server: Server) -> Samples:
    response = httpx.get(f"{server.url}/metrics", timeout=10)  # no API key: /metrics is open on loopback
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def _poll(client: httpx.Client, document_id: str, polls: list[int], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/documents/{document_id}")
        polls[0] += 1
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["terminal"] and all(u["status"] in TERMINAL for u in body["uploads"]):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def flow(client: httpx.Client, tag: str) -> dict[str, Any]:
    """Uploads (OCR, a text PDF, a damaged scan, a copy of the text PDF) polled to their outcome, and
    predictions on text; returns what the API answered."""
    memo_pdf = text_pdf([MEMO + f"\n{tag}"])
    files = {
        "scan": (f"{tag}-letter.png", _png(LETTER + f"\n{tag}"), "image/png"),
        "memo": (f"{tag}-memo.pdf", memo_pdf, "application/pdf"),
        "damaged": (f"{tag}-damaged.png", _png(EMAIL + f"\n{tag}")[:2000], "image/png"),
        "copy": (f"{tag}-copy.pdf", memo_pdf, "application/pdf"),
    }
    polls = [0]
    ids: dict[str, str] = {}
    for name in ("scan", "memo", "damaged"):
        accepted = client.post("/documents", files={"file": files[name]})
        assert accepted.status_code == 202, accepted.text
        ids[name] = accepted.json()["document_id"]
    outcomes = {name: _poll(client, document_id, polls) for name, document_id in ids.items()}
    copy = client.post("/documents", files={"file": files["copy"]})  # after the original has its outcome
    assert copy.status_code == 202
    outcomes["copy"] = _poll(client, copy.json()["document_id"], polls)
    predictions = []
    for text in (MEMO, EMAIL, LETTER):
        answer = client.post("/predict/text", json={"text": text})
        assert answer.status_code == 200, answer.text
        predictions.append(answer.json())
    return {"outcomes": outcomes, "predictions": predictions, "polls": polls[0]}


def test_serve_metrics_after_uploads_and_predictions(server: Server) -> None:
    before = scrape(server)
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as client:
        done = flow(client, "exact")
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    outcomes = done["outcomes"]
    # The pipeline's signals came back from the worker processes: one per upload, by its terminal status
    assert outcomes["memo"]["status"] == "CLASSIFIED"
    assert outcomes["damaged"]["status"] == "REJECTED"
    copy_upload = [u for u in outcomes["copy"]["uploads"] if u["source"].endswith("-copy.pdf")]
    assert [u["status"] for u in copy_upload] == ["DUPLICATE"]
    expected = Counter([outcomes["scan"]["status"], "CLASSIFIED", "REJECTED", "DUPLICATE"])
    for status in TERMINAL:
        assert delta("documents_processed_total", status=status) == expected.get(status, 0), status
    assert delta("documents_uploaded_total") == 4
    assert delta("ocr_processing_seconds_count") == delta("ocr_confidence_score_count") == 1  # the scan
    # Predictions: the two classified uploads (the pipeline) and the three /predict/text answers
    classes = Counter(
        [outcomes["scan"]["prediction"]["predicted_class"], outcomes["memo"]["prediction"]["predicted_class"]]
        + [p["predicted_class"] for p in done["predictions"]]
    )
    version, accuracy = _model()
    for name, n in classes.items():
        assert delta("predictions_total", **{"class": name, "model_version": version}) == n, name
    assert delta("prediction_confidence_score_count", model_version=version) == 5
    # API latency by route template, method and status
    assert delta("api_request_duration_seconds_count", endpoint="/predict/text", method="POST", status="200") == 3
    assert delta("api_request_duration_seconds_count", endpoint="/documents", method="POST", status="202") == 4
    polled = delta("api_request_duration_seconds_count", endpoint="/documents/{document_id}", method="GET")
    assert polled == done["polls"]
    assert not any("exact-" in dict(ls).get("endpoint", "") for _, ls in after)  # never a raw path
    assert after[("model_accuracy", frozenset({("model_version", version)}))] == pytest.approx(accuracy)
    # /metrics needs no key; the API still does
    assert httpx.get(f"{server.url}/documents", timeout=10).status_code == 401


# -- live: Prometheus scrapes, the dashboard's queries answer --------------------------------------------------------


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).exists()), None)


class Daemon:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{url} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, with Grafana's interval variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$__range", "5m")
            queries.append((panel["title"], expr))
    return queries


def test_dashboard_covers_every_contract_metric() -> None:
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in (
        "documents_uploaded_total",
        "documents_processed_total",
        "ocr_processing_seconds",
        "ocr_confidence_score",
        "prediction_confidence_score",
        "predictions_total",
        "pipeline_seconds",
        "model_accuracy",
        "api_request_duration_seconds",
        "drift_score",
    ):
        assert metric in exprs, metric


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


def test_live_prometheus_scrapes_serve_and_answers_every_dashboard_query(server: Server, tmp_path: Path) -> None:
    prometheus_bin, exporter_bin = _binary("prometheus"), _binary("prometheus-node-exporter")
    if prometheus_bin is None or exporter_bin is None:
        pytest.skip("the prometheus / prometheus-node-exporter binaries are not installed (make system-deps)")
    started = time.monotonic()
    # node_exporter's textfile collector reads the CLI's runs (and the drift job's score)
    cli_home = tmp_path / "cli-home"
    textfiles = cli_home / "metrics"
    textfiles.mkdir(parents=True)
    exporter_port, prometheus_port = _free_port(), _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: docflow-serve\n    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
        f"  - job_name: docflow-textfile\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    exporter = Daemon(
        [
            exporter_bin,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
            f"--web.listen-address=127.0.0.1:{exporter_port}",
        ],
        tmp_path / "node-exporter.log",
    )
    prom = Daemon(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--web.enable-lifecycle",
        ],
        tmp_path / "prometheus.log",
    )
    url = f"http://127.0.0.1:{prometheus_port}"
    try:
        exporter.wait_ready(f"http://127.0.0.1:{exporter_port}/metrics")
        prom.wait_ready(f"{url}/-/ready")
        # Its first scrapes of both targets are in before any document moves: the flow shows as increases
        wait_for(lambda: len(query(url, "up == 1")) == 2, "both targets up")
        # While Prometheus scrapes every second, documents flow through the server's workers
        with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as client:
            flow(client, "live-1")
            # A drift job publishes its scores the way `docflow drift` does: a textfile for the collector
            from docflow import telemetry

            drift = telemetry.PrometheusSink()
            previous = telemetry.configure(drift)
            try:
                telemetry.drift_score("class_distribution", 0.05)
                telemetry.drift_score("prediction_confidence", 0.12)
            finally:
                telemetry.configure(previous)
            drift.write_textfile(textfiles / "docflow-drift.prom")
            # and a `docflow process` run leaves its textfile where the collector reads
            memo = tmp_path / "memo.pdf"
            memo.write_bytes(text_pdf([MEMO + "\nlive-cli"]))
            cli = subprocess.run(
                [*DOCFLOW, "process", str(memo), "--workers", "1"],
                capture_output=True,
                text=True,
                env={**os.environ, "DOCFLOW_HOME": str(cli_home), "DOCFLOW_MODEL_DIR": str(MODEL)},
                timeout=120,
            )
            assert cli.returncode == 0, cli.stderr
            time.sleep(2)
            flow(client, "live-2")
        # Prometheus has scraped the last document's signals, and the drift job's textfile
        wait_for(lambda: _value(query(url, 'sum(documents_uploaded_total{job="docflow-serve"})')) >= 8, "uploads")
        wait_for(lambda: len(query(url, "drift_score")) == 2, "drift scores")
        wait_for(lambda: query(url, 'documents_processed_total{job="docflow-textfile"}'), "the CLI's textfile")
        up = {r["metric"]["job"]: r["value"][1] for r in query(url, "up")}
        assert up == {"docflow-serve": "1", "docflow-textfile": "1"}, up

        # Then every query of the Grafana dashboard returns data
        empty = [(title, expr) for title, expr in dashboard_queries() if not query(url, expr)]
        assert empty == [], empty
        # and the numbers are the flow's: 8 uploads processed, 6 /predict/text answers, drift as published
        assert _value(query(url, 'sum(documents_processed_total{job="docflow-serve"})')) >= 8
        assert _value(query(url, "sum(rate(documents_processed_total[1m]))")) > 0
        assert _value(query(url, "sum(rate(predictions_total[1m]))")) > 0
        api = query(url, 'sum(api_request_duration_seconds_count{endpoint="/predict/text",status="200"})')
        assert _value(api) >= 6
        cli_counts = query(url, 'sum by (status) (documents_processed_total{job="docflow-textfile"})')
        assert {r["metric"]["status"]: r["value"][1] for r in cli_counts} == {"CLASSIFIED": "1"}
        scores = {r["metric"]["signal"]: float(r["value"][1]) for r in query(url, "max by (signal) (drift_score)")}
        assert scores == {"class_distribution": 0.05, "prediction_confidence": 0.12}
    finally:
        prom.stop()
        exporter.stop()
    assert time.monotonic() - started < 90

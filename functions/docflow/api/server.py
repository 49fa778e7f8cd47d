"""`docflow serve`: the API on the embedded stores, over HTTP with uvicorn, with background pipeline workers.

Without an API key (DOCFLOW_API_KEY) the server refuses to listen beyond loopback: an open port on a
network would hand every document to anyone who asks. On loopback it starts, with a loud warning.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading

from pydantic import ValidationError

from docflow.api.redact import redact_upload_path
from docflow.errors import ConfigurationError
from docflow.settings import Settings

LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RedactUploadTokens(logging.Filter):
    """An upload URL's token lets whoever holds it upload until it expires: the access log (uvicorn's record
    args are client, method, path, HTTP version, status) shows /uploads/<redacted> instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_upload_path(args[2]), *args[3:])
        return True


def serve(host: str, port: int, workers: int, settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; then finish (or record, after DOCFLOW_API_SHUTDOWN_GRACE seconds) the
    documents in flight. Uploads accepted but not started run at the next start (journal)."""
    # Imported here, not at the top: importing this module must stay light (the CLI does, to offer `docflow
    # serve`; the spawned pipeline workers run it again as __mp_main__ under `python -m docflow.api.server`),
    # and only serving needs uvicorn, FastAPI and the app.
    import uvicorn

    from docflow import telemetry
    from docflow.api.app import create_app
    from docflow.api.config import ApiSettings
    from docflow.api.metrics import install_metrics_endpoint, report_loaded_model
    from docflow.api.worker import LocalWorkers
    from docflow.context import build_context
    from docflow.pipeline.run_lock import holding_run_lock
    from docflow.powertools import logger
    from docflow.telemetry import PrometheusSink

    if settings.backend != "local":
        raise ConfigurationError("`docflow serve` runs on the embedded stores (DOCFLOW_BACKEND=local)")
    api = ApiSettings()
    if api.api_key is None:
        if not is_loopback(host):
            raise ConfigurationError(
                f"refusing to serve on {host} without an API key: set DOCFLOW_API_KEY, or listen on 127.0.0.1"
            )
        logger.warning(
            "NO API KEY: every request on %s:%d is answered without authentication (loopback only). "
            "Set DOCFLOW_API_KEY to require the x-api-key header.",
            host,
            port,
        )
    # Before libtesseract loads (upload-and-predict OCRs in this process): its OpenMP threads only contend.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    # The state directory's run lock, held while serving: a `docflow process` beside it must not take this
    # server's documents in flight for orphans.
    with holding_run_lock(settings):  # (its workers journal and re-run their own unfinished uploads)
        ctx = build_context(settings)
        # Prometheus: this process's requests, and the pipeline signals its workers hand back (GET /metrics).
        sink = PrometheusSink()
        telemetry.configure(sink)
        report_loaded_model(ctx)
        pool = LocalWorkers(settings, workers=workers, max_queue=api.api_max_queue)
        app = create_app(context=lambda: ctx, api_settings=lambda: api, submitter=pool)
        install_metrics_endpoint(app, sink)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level="info",
            server_header=False,
            # The pipeline shutdown (lifespan) has its own grace period; requests get a short one.
            timeout_graceful_shutdown=10,
        )
        # uvicorn.Config has configured its loggers: the access log must not carry upload tokens.
        logging.getLogger("uvicorn.access").addFilter(RedactUploadTokens())
        server = uvicorn.Server(config)
        # uvicorn re-raises the stopping signal once it has shut down gracefully, which would kill the process
        # with it (or print a KeyboardInterrupt); after a clean stop, `serve` returns and the exit status is 0.
        main_thread = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, lambda _s, _f: None) for sig in _STOP_SIGNALS} if main_thread else {}
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docflow.api.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pipeline worker processes")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, args.workers, Settings())
    except (ConfigurationError, ValidationError) as exc:
        print(f"docflow serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lambda-style cold start of every handler: a fresh Python process imports the handler module, then does
what its first invocation sets up before any document work (engine and model loads).

    .venv/bin/python bench/cold_start.py [--runs 3]

Per handler (infra_cdk/constants.py FUNCTIONS and the API), median of --runs processes:
- import_s: `import docflow.handlers.<name>` (powertools, pydantic models, the handler's own modules);
- setup_s: the first call's one-time work — Validate: the validation module (Pillow, pdfium); ExtractText /
  ExtractPages: the extraction module and a Tesseract engine that has read its language data (one OCR of
  a tiny image); Classify: the context and the ONNX model; the others: the context (stores) only;
- process_s: the whole child process, interpreter start included (what Lambda's init phase also pays).
Local stores in a temporary DOCFLOW_HOME; no network. Writes bench/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path[:0] = [str(REPO / "functions"), str(REPO)]

SETUP = {
    "validate": "import docflow.domain.validation",
    "extract_text": (
        "from PIL import Image\n"
        "from docflow.domain.extraction import default_engine\n"
        "from docflow.context import get_context\n"
        "default_engine().recognize(Image.new('L', (64, 32), 255), get_context().settings.ocr)"
    ),
    "classify": "from docflow.context import get_context\nget_context().classifier()",
    "api": "",  # the app is built at import; its stores and model on the first request
}
SETUP["extract_pages"] = SETUP["extract_text"]

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import importlib
importlib.import_module("docflow.handlers." + sys.argv[1])
t1 = time.perf_counter()
from docflow.context import get_context
get_context()
exec(sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "setup_s": t2 - t1}))
"""


def handlers() -> list[str]:
    from infra_cdk import constants as c

    names = [spec.handler.split(".")[2] for spec in c.FUNCTIONS.values()]
    return [*names, c.API_FUNCTION.handler.split(".")[2]]


def cold_start(name: str, runs: int) -> dict[str, Any]:
    samples = []
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "DOCFLOW_HOME": home,
            "OMP_THREAD_LIMIT": "1",
            "POWERTOOLS_SERVICE_NAME": "docflow",
            "POWERTOOLS_METRICS_NAMESPACE": "Docflow",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env.pop("DOCFLOW_FAULTS", None)
        for _ in range(runs):
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, name, SETUP.get(name, "")],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            sample = json.loads(proc.stdout.strip().splitlines()[-1])
            sample["process_s"] = time.perf_counter() - started
            samples.append(sample)
    return {key: round(statistics.median(s[key] for s in samples), 3) for key in ("import_s", "setup_s", "process_s")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = {name: cold_start(name, args.runs) for name in handlers()}
    print(f"{'handler':<16}{'import s':>10}{'setup s':>10}{'process s':>11}")
    for name, r in result.items():
        print(f"{name:<16}{r['import_s']:>10.3f}{r['setup_s']:>10.3f}{r['process_s']:>11.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

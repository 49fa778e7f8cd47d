"""Each function's code plus its layers, imported and exercised by a Python 3.12 interpreter (the Lambda
runtime's version) with nothing else on its path but what the runtime itself provides (the AWS SDK)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra_cdk import constants as c

pytestmark = [pytest.mark.infra, pytest.mark.slow]

# pyenv's shims refuse a version that is not selected: take the interpreter itself.
PYTHON312 = next(iter(sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))), None) or shutil.which(
    "python3.12"
)
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")

PROBE = r"""
import json, os, sys
handler = sys.argv[1]
module = handler.rsplit(".", 1)[0]
__import__(module)
out = {"imported": module}
if "classify" in module or "rescore" in module or module.endswith(".api"):
    from docflow.domain.classifier import load_classifier
    from docflow.settings import DEFAULT_MODEL_DIR
    memo = "MEMORANDUM TO: all staff FROM: J. Smith"
    out["prediction"] = load_classifier(DEFAULT_MODEL_DIR).predict(memo).predicted_class
if "extract" in module or "validate" in module or module.endswith(".api"):
    from PIL import Image, ImageDraw
    from docflow.domain.ocr import TesserocrEngine
    from docflow.values import OcrOptions
    page = Image.new("L", (900, 200), 255)
    ImageDraw.Draw(page).text((20, 80), "INVOICE NUMBER 12345", fill=0, font_size=40)
    out["ocr"] = TesserocrEngine().recognize(page, OcrOptions()).text
if "training_gate" in module:  # the promotion gate scores through onnxruntime, without scikit-learn
    from docflow.settings import DEFAULT_MODEL_DIR
    from docflow_training.registry import GatePolicy, HeldOutDoc, compare_on_holdout, text_sha256
    memo = "MEMORANDUM TO: all staff FROM: J. Smith"
    docs = [HeldOutDoc("memo.txt", "memo", text_sha256(memo), memo)]
    policy = GatePolicy(min_eval_docs=1)
    same = compare_on_holdout(2, lambda: DEFAULT_MODEL_DIR, 1, lambda: DEFAULT_MODEL_DIR, docs, None, policy)
    out["gate"] = {"promoted": same.promoted, "macro_f1": same.challenger_scores.macro_f1}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in for what the python3.12 Lambda runtime puts on sys.path: the AWS SDK."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    target = tmp_path_factory.mktemp("lambda-runtime")
    for name in RUNTIME_PROVIDED:
        for path in site.glob(f"{name}*"):
            if not path.name.endswith((".dist-info", ".pth")):
                (target / path.name).symlink_to(path)
    return target


SPECS = {**c.FUNCTIONS, **c.TRAINING_FUNCTIONS, "Api": c.API_FUNCTION}


@pytest.mark.skipif(PYTHON312 is None, reason="no python3.12 interpreter to stand in for the Lambda runtime")
@pytest.mark.parametrize("name", list(SPECS))
def test_function_runs_on_its_layers_alone(name: str, runtime_dir: Path) -> None:
    from layers.build import build_layer

    spec = SPECS[name]
    paths = [str(c.FUNCTIONS_DIR)] + [str(build_layer(layer) / "python") for layer in spec.layers] + [str(runtime_dir)]
    env = {
        "PYTHONPATH": ":".join(paths),
        "OMP_THREAD_LIMIT": "1",
        "PATH": "/usr/bin:/bin",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    if "ocr" in spec.layers:
        env["TESSDATA_PREFIX"] = str(build_layer("ocr") / "tessdata")
    proc = subprocess.run(
        [str(PYTHON312), "-S", "-c", PROBE, spec.handler], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "prediction" in out:
        assert out["prediction"] == "memo"
    if "ocr" in out:
        assert "INVOICE" in out["ocr"]
    if "gate" in out:  # a model is no better than itself: refused, having scored the memo right
        assert out["gate"] == {"promoted": False, "macro_f1": 1.0}

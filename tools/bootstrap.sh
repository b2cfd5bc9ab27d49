#!/usr/bin/env bash
# Make the project runnable on a fresh machine: system packages (when we may install
# them), a virtualenv in .venv with torch/torchaudio and xllm itself.
# Idempotent and quick when everything is already there. Source it or run it:
#   bash tools/bootstrap.sh            # then: . .venv/bin/activate
# Environment:
#   XLLM_VENV      virtualenv path (default: <repo>/.venv)
#   XLLM_PYTHON    python to create it with (default: python3.11, else python3)
#   XLLM_TORCH     pip spec for torch + torchaudio
#                  (default: "torch==2.14.1 torchaudio==2.11.0", a pair known to work on CPU and GPU)
#   XLLM_NO_APT=1  never call apt-get
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${XLLM_VENV:-$repo/.venv}"
torch_spec="${XLLM_TORCH:-torch==2.14.1 torchaudio==2.11.0}"

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# 1. System packages: ffmpeg (audio/video decoding), espeak-ng (mini corpus), sctk (sclite).
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sclite >/dev/null || command -v sctk >/dev/null || missing+=(sctk)
if ((${#missing[@]})); then
  if [[ "${XLLM_NO_APT:-0}" != 1 ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq "${missing[@]}" >/dev/null || say "apt-get could not install ${missing[*]}"
  elif [[ "${XLLM_NO_APT:-0}" != 1 ]] && command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    say "installing system packages: ${missing[*]}"
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || true
  else
    say "missing system packages: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})"
  fi
fi

# 2. The virtualenv.
if [[ ! -x "$venv/bin/python" ]]; then
  py="${XLLM_PYTHON:-}"
  if [[ -z "$py" ]]; then
    py=python3
    command -v python3.11 >/dev/null && py=python3.11
  fi
  say "creating $venv with $($py --version 2>&1)"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
fi
pip=("$venv/bin/python" -m pip install -q)
log="$venv/bootstrap.log"
quiet() { "$@" >>"$log" 2>&1 || { tail -n 20 "$log" >&2; say "failed: $* (full log: $log)"; exit 1; }; }

# 3. torch + torchaudio first, so that the project's ranges do not pull another build.
if ! "$venv/bin/python" -c "import torch, torchaudio" 2>/dev/null; then
  say "installing $torch_spec"
  # shellcheck disable=SC2086
  quiet "${pip[@]}" $torch_spec
  quiet "$venv/bin/python" -c "import torch, torchaudio"
fi

# 4. xllm itself (editable) with the test extras; redone only when pyproject.toml changes.
stamp="$venv/.xllm-installed"
want="$(sha1sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  say "installing xllm and its dependencies"
  quiet "${pip[@]}" -e "$repo[dev]"
  quiet "$venv/bin/python" -c "import xllm_cli, transformers, webrtcvad, jiwer, ctranslate2"
  echo "$want" >"$stamp"
fi

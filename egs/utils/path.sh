#!/usr/bin/env bash
# Sourced by every recipe's path.sh: make `xllm` runnable. On first use it bootstraps
# the repository's virtualenv (tools/bootstrap.sh); set XLLM_NO_BOOTSTRAP=1 to use
# whatever `xllm` is already on PATH (a site install, a cluster module).
XLLM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export XLLM_ROOT
if [[ "${XLLM_NO_BOOTSTRAP:-0}" != 1 ]]; then
  bash "$XLLM_ROOT/tools/bootstrap.sh" || return 1 2>/dev/null || exit 1
  export PATH="${XLLM_VENV:-$XLLM_ROOT/.venv}/bin:$PATH"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C.UTF-8

#!/usr/bin/env bash
# Run the test suite (bootstrapping the virtualenv first). Extra arguments go to pytest:
#   bash tools/test.sh -k cif -x
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/tools/bootstrap.sh"
venv="${XLLM_VENV:-$repo/.venv}"
cd "$repo"
exec "$venv/bin/python" -m pytest "$@"

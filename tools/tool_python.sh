# Sourced by the tools/get_*.sh scripts: sets $python to the interpreter they run with.
# The project's virtualenv (XLLM_VENV, default <repo>/.venv; made by tools/bootstrap.sh when
# missing), or the python on PATH with XLLM_NO_BOOTSTRAP=1. Needs $repo set by the caller.
if [[ "${XLLM_NO_BOOTSTRAP:-0}" == 1 ]]; then
  python="$(command -v python3 || command -v python)"
else
  venv="${XLLM_VENV:-$repo/.venv}"
  [[ -x "$venv/bin/python" ]] || bash "$repo/tools/bootstrap.sh"
  python="$venv/bin/python"
fi

#!/usr/bin/env bash
# Run a job on this machine, logging to LOG:  run_local.sh [--gpus N] [--mem M] [--time T] LOG command args...
# Resource options are accepted (and ignored) so recipes can pass the same ones to Slurm.
set -euo pipefail
gpus=""
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --gpus) gpus="$2"; shift 2 ;;
    --mem | --time | --cpus) shift 2 ;;
    *) echo "run_local.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
log="$1"; shift
mkdir -p "$(dirname "$log")"
echo "# $* (started $(date -u '+%F %T') on $(hostname))" >>"$log"
if [[ -n "$gpus" && "$gpus" -gt 0 && -z "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  export CUDA_VISIBLE_DEVICES="$(seq -s, 0 $((gpus - 1)))"
fi
set +e
"$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
echo "# finished with exit code $rc at $(date -u '+%F %T')" >>"$log"
exit "$rc"

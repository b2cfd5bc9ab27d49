#!/usr/bin/env bash
# Run a job through Slurm and wait for it:  run_slurm.sh [--gpus N] [--mem M] [--time T] [--cpus C] LOG command args...
# Partition, account and defaults come from conf/slurm.conf (KEY=VALUE lines) in the
# recipe directory, or the file named by $XLLM_SLURM_CONF. Uses `srun` (blocking),
# so a recipe stage finishes only when its job does.
set -euo pipefail
conf="${XLLM_SLURM_CONF:-conf/slurm.conf}"
partition="" account="" gpus=0 mem="" time_limit="" cpus="" extra=""
if [[ -f "$conf" ]]; then
  while IFS='=' read -r key value; do
    [[ -z "$key" || "$key" == \#* ]] && continue
    case "$key" in
      partition) partition="$value" ;;
      account) account="$value" ;;
      gpus) gpus="$value" ;;
      mem) mem="$value" ;;
      time) time_limit="$value" ;;
      cpus) cpus="$value" ;;
      extra) extra="$value" ;;
      *) echo "run_slurm.sh: $conf: unknown key '$key'" >&2; exit 1 ;;
    esac
  done <"$conf"
fi
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --gpus) gpus="$2"; shift 2 ;;
    --mem) mem="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    *) echo "run_slurm.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
log="$1"; shift
mkdir -p "$(dirname "$log")"
args=(--job-name "xllm-$(basename "$log" .log)" --output "$log" --open-mode append)
[[ -n "$partition" ]] && args+=(--partition "$partition")
[[ -n "$account" ]] && args+=(--account "$account")
[[ "$gpus" != 0 ]] && args+=(--gpus-per-node "$gpus")
[[ -n "$mem" ]] && args+=(--mem "$mem")
[[ -n "$time_limit" ]] && args+=(--time "$time_limit")
[[ -n "$cpus" ]] && args+=(--cpus-per-task "$cpus")
# shellcheck disable=SC2206
[[ -n "$extra" ]] && args+=($extra)
exec srun "${args[@]}" "$@"

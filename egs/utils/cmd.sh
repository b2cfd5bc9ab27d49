#!/usr/bin/env bash
# Sourced by every recipe's cmd.sh. Chooses where jobs run:
#   cmd_backend=local  (default) run on this machine
#   cmd_backend=slurm  submit with srun; partition/account/gpus/mem/time from conf/slurm.conf
# Jobs are started as: $train_cmd [--gpus N] [--mem M] LOGFILE command args...
cmd_backend="${cmd_backend:-local}"
case "$cmd_backend" in
  local) train_cmd="utils/run_local.sh"; decode_cmd="utils/run_local.sh" ;;
  slurm) train_cmd="utils/run_slurm.sh"; decode_cmd="utils/run_slurm.sh" ;;
  *) echo "cmd.sh: cmd_backend must be local or slurm, not '$cmd_backend'" >&2; exit 1 ;;
esac

# shellcheck shell=bash
# local for this machine; cmd_backend=slurm bash run.sh for a cluster (see conf/slurm.conf).
. "$(dirname "${BASH_SOURCE[0]}")/../utils/cmd.sh"

# shellcheck shell=bash
. "$(dirname "${BASH_SOURCE[0]}")/../utils/path.sh"

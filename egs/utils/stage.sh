#!/usr/bin/env bash
# Stage helpers for recipes. Source after parse_options.sh.
#   if want 3; then ...; fi      -> true when stage <= 3 <= stop_stage
#   done_or_run exp/x/.done cmd  -> run cmd unless the marker exists, then create it
want() { [[ "$stage" -le "$1" && "$stop_stage" -ge "$1" ]]; }
banner() { printf '\n=== stage %s: %s ===\n' "$1" "$2" >&2; }
done_or_run() {
  local marker="$1"; shift
  if [[ -f "$marker" ]]; then
    echo "skip (done: $marker): $*" >&2
    return 0
  fi
  "$@"
  mkdir -p "$(dirname "$marker")"
  touch "$marker"
}

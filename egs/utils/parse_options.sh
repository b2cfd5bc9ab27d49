#!/usr/bin/env bash
# Parse `--name value` options into shell variables that the calling script has
# already defined (dashes become underscores), Kaldi style. Source it after the
# defaults:   stage=0; stop_stage=100; . utils/parse_options.sh
# `--help` prints the script's leading comment block and the current values.
# Unknown options are an error (exit 1), so typos never pass silently.

while (($#)); do
  case "$1" in
    --help | -h)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      echo "Options (current values):"
      grep -oE '^[a-z_][a-z0-9_]*=' "$0" | tr -d '=' | sort -u | while read -r __name; do
        printf '  --%s %s\n' "${__name//_/-}" "${!__name-}"
      done
      exit 0
      ;;
    --*=*)
      __name="${1%%=*}"; __value="${1#*=}"; shift
      set -- "$__name" "$__value" "$@"
      continue
      ;;
    --*)
      __name="${1#--}"; __name="${__name//-/_}"
      if [[ ! "$__name" =~ ^[a-z_][a-z0-9_]*$ ]] || ! declare -p "$__name" >/dev/null 2>&1; then
        echo "$0: unknown option $1 (see $0 --help)" >&2
        exit 1
      fi
      if (($# < 2)); then
        echo "$0: option $1 needs a value" >&2
        exit 1
      fi
      printf -v "$__name" '%s' "$2"
      shift 2
      ;;
    *)
      break
      ;;
  esac
done

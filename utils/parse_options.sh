#!/usr/bin/env bash
# Kaldi-style option parsing; source it after declaring defaults:
#   stage=1; nj=4; . utils/parse_options.sh
# Turns "--stage 3 --nj=8 --use-gpu true" into stage=3 nj=8 use_gpu=true. Only variables that
# already exist can be set (a typo is an error, not a silent no-op). "--help"/"-h" prints
# $help_message and exits 0; "--config FILE" sources FILE first. Positional arguments stop the
# parsing and stay in "$@" (a script that takes none should refuse them).
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      if [ -z "${help_message:-}" ]; then echo "No help found." 1>&2; else printf "%s\n" "$help_message"; fi
      exit 0 ;;
    --*=*)
      _name=$(echo "${1%%=*}" | sed 's/^--//; s/-/_/g'); _value="${1#*=}"; shift ;;
    --*)
      _name=$(echo "$1" | sed 's/^--//; s/-/_/g')
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" 1>&2; exit 1; fi
      _value="$2"; shift 2 ;;
    *) break ;;
  esac
  if [ "$_name" = config ]; then
    [ -f "$_value" ] || { echo "$0: config file $_value not found" 1>&2; exit 1; }
    . "$_value"; continue
  fi
  # an option is a lower-case variable the script declared (not an environment variable such as
  # PATH, IFS or http_proxy, and not help_message)
  if ! [[ "$_name" =~ ^[a-z][a-z0-9_]*$ ]] || [ "$_name" = help_message ] || ! declare -p "$_name" >/dev/null 2>&1 \
     || [[ "$(declare -p "$_name")" =~ ^declare\ -[a-zA-Z]*x ]]; then
    echo "$0: invalid option --$_name (see --help)" 1>&2; exit 1
  fi
  printf -v "$_name" '%s' "$_value"
done
unset _name _value
true

#!/usr/bin/env bash
# Stage selection shared by the recipes' run.sh; source it after utils/parse_options.sh. Needs
# ${stage}, ${stop_stage}, ${last_stage} and ${skip_stages} set; runs before the venv exists.
#
#   check_stages "$@"     exit 1 on a stray argument, a --stage/--stop_stage outside 1..last_stage
#                         (or not a number), --stage after --stop_stage, or a bad --skip_stages entry
#   check_bools NAME...   exit 1 unless each option NAME is true or false
#   run_stage N           whether stage N is in --stage..--stop_stage and not in --skip_stages

_stages_die() { echo "$0: $*" >&2; exit 1; }
_stages_is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

check_stages() {
  [ $# -eq 0 ] || _stages_die "unexpected argument '$1': options are --name value (see --help)"
  local v s
  for v in stage stop_stage; do
    { _stages_is_int "${!v}" && [ "${!v}" -ge 1 ] && [ "${!v}" -le "${last_stage}" ]; } \
      || _stages_die "--${v} must be a stage number from 1 to ${last_stage}, got '${!v}' (see --help)"
  done
  [ "${stage}" -le "${stop_stage}" ] || _stages_die "--stage ${stage} is after --stop_stage ${stop_stage}: nothing would run"
  for s in ${skip_stages}; do
    { _stages_is_int "$s" && [ "$s" -ge 1 ] && [ "$s" -le "${last_stage}" ]; } \
      || _stages_die "--skip_stages: '$s' is not a stage number from 1 to ${last_stage}"
  done
}

check_bools() {
  local b
  for b in "$@"; do
    case "${!b}" in true|false) ;; *) _stages_die "--${b} must be true or false, got '${!b}'" ;; esac
  done
}

run_stage() {
  [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ] || return 1
  local s; for s in ${skip_stages}; do [ "$s" != "$1" ] || return 1; done
}

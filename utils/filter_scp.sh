#!/usr/bin/env bash
# utils/filter_scp.sh [--exclude] IDLIST IN : lines of IN whose first field is (not) in IDLIST's first field.
set -eu
exclude=0
[ "${1:-}" = --exclude ] && { exclude=1; shift; }
[ $# -eq 2 ] || { echo "usage: $0 [--exclude] idlist in.scp" >&2; exit 2; }
awk -v ex=$exclude 'NR==FNR { keep[$1] = 1; next } ((($1 in keep) ? 1 : 0) != ex)' "$1" "$2"

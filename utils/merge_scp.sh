#!/usr/bin/env bash
# utils/merge_scp.sh OUT IN_1 [IN_2 ...] : the "key value" lines of the per-job tables IN_* (e.g. one
# per JOB of a split stage) sorted by key into OUT (written atomically). A missing input or a key in
# two inputs is an error naming them.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 out in.1 [in.2 ...]" >&2; exit 2; }
out=$1; shift
for f in "$@"; do [ -f "$f" ] || { echo "$0: $f is missing (did its job finish?)" >&2; exit 1; }; done
dup=$(cat "$@" | cut -d' ' -f1 | sort | uniq -d | head -n 3 | tr '\n' ' ')
[ -z "$dup" ] || { echo "$0: key(s) in more than one of $*: $dup" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cat "$@" | sort -k1,1 > "$out.tmp" && mv "$out.tmp" "$out"

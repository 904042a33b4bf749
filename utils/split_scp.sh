#!/usr/bin/env bash
# utils/split_scp.sh IN OUT_1 .. OUT_N : split IN's lines into N contiguous, near-equal parts.
# An empty part is an error (use fewer jobs than lines).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 in.scp out.1 [out.2 ...]" >&2; exit 2; }
in=$1; shift
n=$#; total=$(grep -c . "$in" || true)
[ "$total" -ge "$n" ] || { echo "$0: $in has $total lines, fewer than the $n parts asked for; use nj <= $total" >&2; exit 1; }
i=0
for out in "$@"; do
  start=$(( i * total / n + 1 )); end=$(( (i + 1) * total / n ))
  grep . "$in" | sed -n "${start},${end}p" > "$out.tmp" && mv "$out.tmp" "$out"
  i=$((i + 1))
done

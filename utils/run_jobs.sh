#!/usr/bin/env bash
# Local job runner, Kaldi run.pl-style:  utils/run_jobs.sh [--max-jobs-run K] JOB=1:N LOG CMD [ARG...]
# Runs CMD N times with every "JOB" in LOG, CMD and each ARG replaced by 1..N, at most K at once
# (default: nproc), each writing LOG. Exits non-zero naming the failed logs if any job failed.
# Without JOB=, runs CMD once into LOG.
# CMD and its ARGs are executed as they are, never re-read by a shell (unlike Kaldi's run.pl, which
# joins them into a shell string): an argument holding spaces, quotes or $(...) stays one literal
# argument. For pipes or redirections ask for a shell yourself: ... LOG bash -c 'a JOB | b'.
set -u
max_jobs=$(nproc 2>/dev/null || echo 2)
if [ "${1:-}" = --max-jobs-run ]; then max_jobs=$2; shift 2; fi
if [[ "${1:-}" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
  first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; shift
else
  first=1; last=1
fi
[ $# -ge 2 ] || { echo "usage: $0 [--max-jobs-run K] [JOB=1:N] LOG CMD..." >&2; exit 2; }
log=$1; shift
args=("$@")
pids=(); logs=()
for ((j = first; j <= last; j++)); do
  jl=${log//JOB/$j}
  jargs=(); for a in "${args[@]}"; do jargs+=("${a//JOB/$j}"); done
  mkdir -p "$(dirname "$jl")"
  (
    printf '#'; printf ' %q' "${jargs[@]}"; echo; echo "# started at $(date)"
    "${jargs[@]}"; rc=$?
    echo "# ended (code $rc) at $(date)"; exit $rc
  ) >"$jl" 2>&1 &
  pids+=($!); logs+=("$jl")
  while [ "$(jobs -rp | wc -l)" -ge "$max_jobs" ]; do sleep 0.2; done
done
failed=()
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed+=("${logs[$i]}")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "$0: ${#failed[@]} of ${#pids[@]} job(s) failed; see ${failed[*]}" >&2
  for f in "${failed[@]}"; do echo "---- tail of $f" >&2; tail -n 15 "$f" >&2; done
  exit 1
fi

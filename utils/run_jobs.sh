#!/usr/bin/env bash
# Local job runner (cmd_backend=local in cmd.sh), Kaldi run.pl-style:
#   utils/run_jobs.sh [options] [JOB=1:N] LOG CMD [ARG...]
# Runs CMD N times with every "JOB" in LOG, CMD and each ARG replaced by 1..N, at most K at once
# (--max_jobs_run K, default: nproc), each writing LOG. Exits non-zero naming the failed logs if any
# job failed. Without JOB=, runs CMD once into LOG. A LOG that exists is appended to, after a
# "# ---- restarted at <time>" line (a resumed training keeps its earlier log), never truncated.
# CMD and its ARGs are executed as they are, never re-read by a shell (unlike Kaldi's run.pl, which
# joins them into a shell string): an argument holding spaces, quotes or $(...) stays one literal
# argument. For pipes or redirections ask for a shell yourself: ... LOG bash -c 'a JOB | b'.
# Options: the resource options of utils/slurm.sh (--gpu N, --num_threads N, --mem M, --time T,
# --name NAME, --config FILE) are accepted so that one command line works with either backend
# (and with espnet2.bin.launch, which passes --gpu N); locally they are not enforced.
# --num_nodes / --num_tasks_per_node above 1 are refused: one machine runs one task per job here.
set -u
max_jobs=$(nproc 2>/dev/null || echo 2)
while [[ "${1:-}" == --* ]]; do
  [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
  case "$1" in
    --max-jobs-run|--max_jobs_run) max_jobs=$2 ;;
    --gpu|--num_threads|--mem|--time|--name|--config) ;;   # resources: not enforced locally
    --num_nodes|--num_tasks_per_node)
      [ "$2" = 1 ] || { echo "$0: $1 $2: the local backend runs one task on this machine;" \
                             "use cmd_backend=slurm (./run.sh --cmd_backend slurm) for more" >&2; exit 2; } ;;
    *) echo "$0: unknown option $1 (known: --max_jobs_run --gpu --num_threads --mem --time --name --config" \
            "--num_nodes --num_tasks_per_node)" >&2; exit 2 ;;
  esac
  shift 2
done
[[ "$max_jobs" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --max_jobs_run must be a positive integer, got '$max_jobs'" >&2; exit 2; }
if [[ "${1:-}" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
  first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; shift
  [ "$first" -le "$last" ] || { echo "$0: empty job range JOB=$first:$last" >&2; exit 2; }
else
  first=1; last=1
fi
[ $# -ge 2 ] || { echo "usage: $0 [options] [JOB=1:N] LOG CMD..." >&2; exit 2; }
log=$1; shift
args=("$@")
pids=(); logs=()
for ((j = first; j <= last; j++)); do
  jl=${log//JOB/$j}
  jargs=(); for a in "${args[@]}"; do jargs+=("${a//JOB/$j}"); done
  mkdir -p "$(dirname "$jl")"
  (
    # a rerun (resumed training, a redone job) appends: the earlier runs' output stays above
    [ -s "$jl" ] && echo "# ---- restarted at $(date '+%Y-%m-%dT%H:%M:%S%z'); the earlier run's log is above ----"
    printf '#'; printf ' %q' "${jargs[@]}"; echo; echo "# started at $(date)"
    "${jargs[@]}"; rc=$?
    echo "# ended (code $rc) at $(date)"; exit $rc
  ) >>"$jl" 2>&1 &
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

#!/usr/bin/env bash
# SLURM job runner (cmd_backend=slurm in cmd.sh), with utils/run_jobs.sh's interface and Kaldi
# slurm.pl's semantics:
#   utils/slurm.sh [options] [JOB=1:N] LOG CMD [ARG...]
# Submits CMD with `sbatch --wait`: with JOB=1:N one job array of N tasks, every "JOB" in LOG, CMD
# and each ARG replaced by the task's index (1..N); without JOB=, one job. Each task writes its LOG
# (the command, its output, "# ended (code RC)"); SLURM's own output goes to <dir of LOG>/q/. A LOG
# that exists is appended to, after a "# ---- restarted at <time>" line (a resumed training keeps
# its earlier log), never truncated, like utils/run_jobs.sh; so are the files in q/ (--open-mode=append).
# Waits for all tasks and exits non-zero naming the failed logs if any task failed (Ctrl-C cancels
# the job). CMD and its ARGs reach the job as sbatch's script arguments and are executed as they are,
# never re-read by a shell: an argument holding spaces, quotes or $(...) stays one literal argument.
# Options (Kaldi/ESPnet names):
#   --config FILE         cluster settings (partition, GPU gres, time, ...; default: conf/slurm.conf
#                         when it exists); see conf/slurm.conf for the keys
#   --gpu N               GPUs per node (--gres=<gpu_gres>:N, in the config's gpu_partition)
#   --num_threads N       CPUs per task (--cpus-per-task)
#   --mem M               memory per node (--mem, e.g. 16G)
#   --time T              time limit (--time, e.g. 24:00:00)
#   --num_nodes K         nodes per job (--nodes); CMD runs once, on the first: start the per-node
#   --num_tasks_per_node T   tasks yourself with `srun CMD` (e.g. DDP training, see run.sh)
#   --max_jobs_run K      at most K array tasks at once (--array=1-N%K)
#   --name NAME           job name (default: from LOG)
set -u

# ---- inside the job: `slurm.sh --_task SUBST LOG CMD...` (sbatch's copy of this script runs it)
if [ "${1:-}" = --_task ]; then
  subst=$2 log=$3; shift 3
  args=("$@")
  if [ "$subst" = 1 ]; then
    j=${SLURM_ARRAY_TASK_ID:?"--_task: not a SLURM array task"}
    log=${log//JOB/$j}
    args=(); for a in "$@"; do args+=("${a//JOB/$j}"); done
  fi
  mkdir -p "$(dirname "$log")"
  # a rerun (resumed training, a redone job) appends: the earlier runs' output stays above
  restarted=""; [ -s "$log" ] && restarted=1
  exec >>"$log" 2>&1
  [ -z "$restarted" ] || echo "# ---- restarted at $(date '+%Y-%m-%dT%H:%M:%S%z'); the earlier run's log is above ----"
  printf '#'; printf ' %q' "${args[@]}"; echo
  echo "# started at $(date) on $(hostname) (SLURM job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+, task $SLURM_ARRAY_TASK_ID})"
  "${args[@]}"; rc=$?
  echo "# ended (code $rc) at $(date)"
  exit $rc
fi

die() { echo "$0: $*" >&2; exit 2; }
config=""; gpu=0; num_threads=""; mem=""; time_limit=""; num_nodes=1; tasks_per_node=1; max_jobs=""; name=""
while [[ "${1:-}" == --* ]]; do
  [ $# -ge 2 ] || die "option $1 needs a value"
  case "$1" in
    --config) config=$2; [ -f "$config" ] || die "--config $config: no such file" ;;
    --gpu) gpu=$2 ;;
    --num_threads) num_threads=$2 ;;
    --mem) mem=$2 ;;
    --time) time_limit=$2 ;;
    --num_nodes) num_nodes=$2 ;;
    --num_tasks_per_node) tasks_per_node=$2 ;;
    --max-jobs-run|--max_jobs_run) max_jobs=$2 ;;
    --name) name=$2 ;;
    *) die "unknown option $1 (known: --config --gpu --num_threads --mem --time --num_nodes --num_tasks_per_node --max_jobs_run --name)" ;;
  esac
  shift 2
done
for v in gpu num_nodes tasks_per_node; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "--${v/tasks_per_node/num_tasks_per_node} must be a whole number, got '${!v}'"
done
[ "$num_nodes" -ge 1 ] && [ "$tasks_per_node" -ge 1 ] || die "--num_nodes and --num_tasks_per_node must be >= 1"
[ -z "$num_threads" ] || [[ "$num_threads" =~ ^[1-9][0-9]*$ ]] || die "--num_threads must be a positive integer, got '$num_threads'"
[ -z "$max_jobs" ] || [[ "$max_jobs" =~ ^[1-9][0-9]*$ ]] || die "--max_jobs_run must be a positive integer, got '$max_jobs'"
array=""
if [[ "${1:-}" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
  first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; shift
  [ "$first" -le "$last" ] || die "empty job range JOB=$first:$last"
  array="$first-$last${max_jobs:+%$max_jobs}"
fi
[ $# -ge 2 ] || { echo "usage: $0 [options] [JOB=1:N] LOG CMD..." >&2; exit 2; }
log=$1; shift

# ---- cluster settings: KEY=VALUE lines (no shell evaluation)
[ -n "$config" ] || { [ -f conf/slurm.conf ] && config=conf/slurm.conf; }
partition=""; gpu_partition=""; gpu_gres=gpu; account=""; qos=""; extra_args=""; conf_time=""; conf_mem=""
if [ -n "$config" ]; then
  n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%%#*}; line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
    [ -n "$line" ] || continue
    [[ "$line" =~ ^([a-z_]+)=(.*)$ ]] || die "$config:$n: expected KEY=VALUE, got '$line'"
    key=${BASH_REMATCH[1]}; value=${BASH_REMATCH[2]}
    case "$key" in
      partition|gpu_partition|gpu_gres|account|qos|extra_args) printf -v "$key" '%s' "$value" ;;
      time) conf_time=$value ;;
      mem) conf_mem=$value ;;
      *) die "$config:$n: unknown key '$key' (known: partition gpu_partition gpu_gres time mem account qos extra_args)" ;;
    esac
  done < "$config"
fi
command -v sbatch >/dev/null || die "sbatch not found: cmd_backend=slurm needs the SLURM client commands" \
  "(apt-get install slurm-client, or run with --cmd_backend local)"

logdir=$(dirname "$log"); base=$(basename "$log")
mkdir -p "$logdir/q"
[ -n "$name" ] || name=${base%%.*}
# --open-mode=append: SLURM's own output files (q/) are appended to as well, not truncated
opts=(--wait --parsable --open-mode=append --chdir "$PWD" --job-name "$name" --nodes "$num_nodes" --ntasks-per-node "$tasks_per_node")
base=${base//%/_}
if [ -n "$array" ]; then
  opts+=(--array "$array" --output "$logdir/q/${base//JOB/%a}.slurm")
else
  opts+=(--output "$logdir/q/$base.slurm")
fi
if [ "$gpu" -gt 0 ]; then
  opts+=(--gres "$gpu_gres:$gpu")
  part=${gpu_partition:-$partition}
else
  part=$partition
fi
[ -z "$part" ] || opts+=(--partition "$part")
[ -z "$num_threads" ] || opts+=(--cpus-per-task "$num_threads")
mem=${mem:-$conf_mem}; [ -z "$mem" ] || opts+=(--mem "$mem")
time_limit=${time_limit:-$conf_time}; [ -z "$time_limit" ] || opts+=(--time "$time_limit")
[ -z "$account" ] || opts+=(--account "$account")
[ -z "$qos" ] || opts+=(--qos "$qos")
if [ -n "$extra_args" ]; then   # split on whitespace, no glob expansion (--exclude=node[1-3] stays as it is)
  read -r -a extra <<< "$extra_args"; opts+=("${extra[@]}")
fi

if [ -n "$array" ]; then
  logs=(); for ((j = first; j <= last; j++)); do logs+=("${log//JOB/$j}"); done
else
  logs=("$log")
fi
# Logs are appended to, never removed (an earlier run's log stays above a "# ---- restarted at" line).
# A stale log must still not count as this run's result: only what this run's task appends, after
# the size each log has now, is read for its "# started" and "# ended (code 0)" lines.
sizes=(); for f in "${logs[@]}"; do sizes+=("$(stat -c %s "$f" 2>/dev/null || echo 0)"); done
out=$(mktemp); err=$(mktemp)
script=$(readlink -f "${BASH_SOURCE[0]}")
sbatch "${opts[@]}" "$script" --_task "$([ -n "$array" ] && echo 1 || echo 0)" "$log" "$@" >"$out" 2>"$err" &
sbatch_pid=$!
cancel() {
  local id; id=$(head -n 1 "$out" | cut -d';' -f1)
  [ -z "$id" ] || scancel "$id"
  kill "$sbatch_pid" 2>/dev/null
  echo "$0: interrupted; cancelled SLURM job ${id:-(not yet submitted)}" >&2
  rm -f "$out" "$err"; exit 130
}
trap cancel INT TERM
wait "$sbatch_pid"; rc=$?
trap - INT TERM
id=$(head -n 1 "$out" | cut -d';' -f1)
if [ -z "$id" ]; then
  echo "$0: sbatch failed (code $rc): $(cat "$err")" >&2
  echo "$0: sbatch options: ${opts[*]} (cluster settings: ${config:-none; see conf/slurm.conf})" >&2
  rm -f "$out" "$err"; exit 1
fi
rm -f "$out" "$err"
failed=(); failed_idx=()
new_part() { tail -c "+$((sizes[$1] + 1))" "${logs[$1]}" 2>/dev/null; }   # what this run's task wrote
for i in "${!logs[@]}"; do
  # this run's task started, and the footer it wrote last says code 0 (the command's output may
  # lack a final newline)
  if new_part "$i" | grep -q '^# started at ' && new_part "$i" | tail -n 1 | grep -q '# ended (code 0) at '; then
    continue
  fi
  failed+=("${logs[$i]}"); failed_idx+=("$i")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "$0: ${#failed[@]} of ${#logs[@]} job(s) of SLURM job $id failed; see ${failed[*]}" >&2
  for i in "${failed_idx[@]}"; do
    f=${logs[$i]}
    if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt "${sizes[$i]}" ]; then
      echo "---- tail of $f" >&2; tail -n 15 "$f" >&2
    elif [ -f "$f" ]; then
      echo "---- $f has only an earlier run's log (this run's task did not start or was killed); SLURM's output is in $logdir/q/" >&2
    else
      echo "---- $f was not written (the task did not start or was killed); SLURM's output is in $logdir/q/" >&2
    fi
  done
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "$0: sbatch --wait exited with code $rc for SLURM job $id although every log ended with code 0; see $logdir/q/" >&2
  exit 1
fi

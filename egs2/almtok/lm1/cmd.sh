# ESPnet's cmd.sh: how the recipe runs its jobs. Stages call
#   ${decode_cmd} JOB=1:N LOG command args...      (every "JOB" replaced by 1..N, one LOG per job)
#   ${cuda_cmd} --gpu N LOG command args...        (GPU jobs: training, GPU decoding)
#   ${train_cmd} LOG command args...               (CPU jobs of the training side)
# Backends (edit the default here, or ./run.sh --cmd_backend slurm):
#   local  run on this machine (utils/run_jobs.sh: at most nproc jobs at once)
#   slurm  submit with `sbatch --wait` (utils/slurm.sh; partitions, GPU gres, time limits in
#          conf/slurm.conf); multi-GPU / multi-node training runs one DDP rank per SLURM task
# Arguments are passed to the job as they are (never re-read by a shell) by both backends.
cmd_backend=${cmd_backend:-local}

case "${cmd_backend}" in
  local)
    train_cmd="utils/run_jobs.sh"
    cuda_cmd="utils/run_jobs.sh"
    decode_cmd="utils/run_jobs.sh"
    ;;
  slurm)
    train_cmd="utils/slurm.sh --config conf/slurm.conf"
    cuda_cmd="utils/slurm.sh --config conf/slurm.conf"
    decode_cmd="utils/slurm.sh --config conf/slurm.conf"
    ;;
  *)
    echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm; set it in cmd.sh or with --cmd_backend)" >&2
    exit 1
    ;;
esac
export train_cmd cuda_cmd decode_cmd

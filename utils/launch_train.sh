# Sourced by egs2/almtok/*/run.sh after their options are parsed: launch_train reads cmd_backend,
# ngpu, num_nodes, train_tasks_per_node and cuda_cmd, and logs with the recipe's log().

# launch_train LOG CMD ARG...: a trainer through ${cuda_cmd}, as espnet2.bin.launch does. One node:
# one job, --ngpu N (N > 1: ESPnet's multiprocessing DDP). Under slurm with several ranks
# (--num_nodes > 1, --ngpu > 1 or --train_tasks_per_node > 1): one job of num_nodes x tasks_per_node
# SLURM tasks started by srun, one DDP rank each (utils/srun_ddp.sh sets RANK/WORLD_SIZE/MASTER_*).
launch_train() {
  local logf=$1; shift
  if [ -s "${logf}" ]; then  # utils/run_jobs.sh and utils/slurm.sh append; they never truncate
    log "${logf} exists (a resumed or repeated run): appending to it"
  fi
  local per_node=${train_tasks_per_node:-$(( ngpu > 1 ? ngpu : 1 ))}
  if [ "${cmd_backend}" = slurm ] && [ $(( num_nodes * per_node )) -gt 1 ]; then
    local rank_gpu=$(( ngpu > 0 ? 1 : 0 )) backend=gloo
    [ "${rank_gpu}" = 0 ] || backend=nccl
    log "DDP through SLURM: ${num_nodes} node(s) x ${per_node} rank(s), ${ngpu} GPU(s) per node, ${backend}"
    ${cuda_cmd} --gpu "${ngpu}" --num_nodes "${num_nodes}" --num_tasks_per_node "${per_node}" "${logf}" \
      srun --kill-on-bad-exit=1 utils/srun_ddp.sh "$@" --ngpu "${rank_gpu}" --multiprocessing_distributed false \
      --dist_backend "${backend}" --dist_init_method env://
  else
    local dist=()
    [ "${ngpu}" -gt 1 ] && dist=(--multiprocessing_distributed true)
    ${cuda_cmd} --gpu "${ngpu}" "${logf}" "$@" --ngpu "${ngpu}" "${dist[@]}"
  fi
}

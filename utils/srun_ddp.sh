#!/usr/bin/env bash
# One DDP rank per SLURM task:  srun utils/srun_ddp.sh CMD [ARG...]   (inside a job of utils/slurm.sh)
# Sets torch.distributed's env:// variables from SLURM's and runs CMD as it is (no shell re-reading):
#   RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS, LOCAL_RANK = SLURM_LOCALID,
#   MASTER_ADDR = the step's first node, MASTER_PORT = 20000 + SLURM_JOB_ID % 20000 (unless set).
# ESPnet's trainers then run with --multiprocessing_distributed false --dist_init_method env://
# (run.sh adds those); one process per task, so any number of tasks per node and nodes works.
set -eu
for v in SLURM_PROCID SLURM_NTASKS SLURM_LOCALID SLURM_STEP_NODELIST SLURM_JOB_ID; do
  [ -n "${!v:-}" ] || { echo "$0: \$$v is not set: run me as a task of srun inside a SLURM job" >&2; exit 2; }
done
[ $# -ge 1 ] || { echo "usage: srun $0 CMD [ARG...]" >&2; exit 2; }
export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_STEP_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
echo "srun_ddp.sh: rank $RANK of $WORLD_SIZE (local rank $LOCAL_RANK on $(hostname -s)), master $MASTER_ADDR:$MASTER_PORT" >&2
exec "$@"

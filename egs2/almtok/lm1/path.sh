# Sourced by run.sh: the venv (built on first use by utils/setup_env.sh) and this clone on PATH/PYTHONPATH.
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/utils/env.sh"
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}

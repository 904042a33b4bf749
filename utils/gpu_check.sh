#!/usr/bin/env bash
# The first GPU's check (espnet2_almtok/bench/gpu_check.py): training throughput and memory,
# the speed table and learning curves, written to docs/gpu/<date>-<device>/.
#   utils/gpu_check.sh            # on a GPU (the asterisk corpus staged: see --help)
#   utils/gpu_check.sh --quick    # anywhere, CPU too, in about a minute: what the tests run
# Python: this clone's venv (utils/env.sh), unless the python3 on PATH already imports ESPnet
# (a GPU machine whose image holds torch, with the rest carried as wheels).
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$root"
if ! python3 -c "import espnet2, s3prl" >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  . utils/env.sh
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m espnet2_almtok.bench.gpu_check "$@"

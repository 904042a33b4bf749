#!/usr/bin/env bash
# Run the test suite (builds/reuses the venv first). Extra arguments go to pytest; a test file,
# directory or node id among them runs just those (utils/run_tests.sh test/test_docs.py).
#   utils/run_tests.sh            # default suite: unit tests + both demo recipes end to end (2 cores: 7-11 min)
#   utils/run_tests.sh -m slow    # slow suite: 2-process DDP training (both stages, resume), benchmark stage and --quick run, DAC as LM tokenizer, a quick compare run, the codec
#                                 # recipe through a one-node SLURM (root + slurm-wlm/munge), both recipes on mini_an4
#                                 # (mini_an4 tests need ../shared/data/mini_an4.tar.gz)
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
# the system tools the suites use: the demo corpus (sox, espeak-ng), ffmpeg, the SLURM tests
export ALMTOK_SYSTEM_TOOLS="${ALMTOK_SYSTEM_TOOLS:-demo ffmpeg slurm}"
. "$root/utils/env.sh"
cd "$root"
# the whole test/ tree, unless a test file, directory or node id (path::name) is given
targets=(test)
for a in "$@"; do
  if [[ "$a" != -* && -e "${a%%::*}" ]]; then targets=(); break; fi
done
exec python -m pytest -q -m "not slow" -p no:cacheprovider "${targets[@]}" "$@"

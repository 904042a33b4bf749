#!/usr/bin/env bash
# Run the test suite (builds/reuses the venv first). Extra arguments go to pytest.
#   utils/run_tests.sh            # default suite: unit tests + the demo recipe end to end (~8 min, 2 cores)
#   utils/run_tests.sh -m slow    # slow suite: the mini_an4 recipe (needs ../shared/data/mini_an4.tar.gz)
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
. "$root/utils/env.sh"
cd "$root"
exec python -m pytest -q -m "not slow" -p no:cacheprovider test "$@"

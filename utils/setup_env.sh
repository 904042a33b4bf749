#!/usr/bin/env bash
# Create (or reuse) the Python virtual environment for almtok and print its path.
#
# The venv lives outside the clone, keyed on a hash of setup.py, so a CI run or a second clone
# reuses it; when it is absent it is built from nothing (about 5 minutes, ~7 GB).
#   ALMTOK_VENV=/path   use/create exactly this venv instead
#   ALMTOK_PYTHON=...   the interpreter to build it with (default: python3.11, else python3)
# Usage: venv=$(bash utils/setup_env.sh) && . "$venv/bin/activate"
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
key=$(sha256sum "$root/setup.py" | cut -c1-12)
venv=${ALMTOK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/almtok/venv-$key}
py=${ALMTOK_PYTHON:-$(command -v python3.11 || command -v python3)}

log() { echo "[setup_env] $*" >&2; }

# System tools, installed only for the features asked for in ALMTOK_SYSTEM_TOOLS (space-separated;
# run.sh sets it from its options, utils/run_tests.sh for the test suites): "demo" (sox, espeak-ng:
# the demo corpus), "ffmpeg" (the asterisk and audio_dir corpora), "slurm" (slurm-wlm, munge:
# --cmd_backend slurm and the slow suite's cluster). Only what is missing, only as root with
# apt-get; a failed install (offline) is a warning, never a failure of this script.
need=()
for feature in ${ALMTOK_SYSTEM_TOOLS:-}; do
  case "$feature" in
    demo) command -v sox >/dev/null || need+=(sox libsox-fmt-all)
          command -v espeak-ng >/dev/null || need+=(espeak-ng) ;;
    ffmpeg) command -v ffmpeg >/dev/null || need+=(ffmpeg) ;;
    slurm) { command -v sbatch && command -v slurmctld && command -v slurmd; } >/dev/null || need+=(slurm-wlm)
           command -v munged >/dev/null || need+=(munge) ;;
    *) log "WARNING: unknown ALMTOK_SYSTEM_TOOLS feature '$feature' (demo, ffmpeg, slurm)" ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]} with apt-get (for: ${ALMTOK_SYSTEM_TOOLS})"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >&2 \
      || log "WARNING: could not install ${need[*]} (offline?); the features that need them will fail"
  else
    log "WARNING: please install: ${need[*]} (for: ${ALMTOK_SYSTEM_TOOLS})"
  fi
fi

if [ -f "$venv/.almtok-complete" ]; then
  echo "$venv"; exit 0
fi
# One build at a time: a second caller (another clone, a parallel test run) waits for the first
# instead of deleting the venv it is building, then reuses it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if ! flock -n 9; then
  log "another process is building $venv; waiting for it"
  flock 9
fi
if [ -f "$venv/.almtok-complete" ]; then
  echo "$venv"; exit 0
fi
log "building venv at $venv (first run only; a few minutes)"
# pip bakes the venv path into scripts, so build in place; the marker file written last is
# what makes a venv count as complete (a killed build is rebuilt from nothing).
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade "pip<25" "setuptools<74" wheel >&2
# Dependencies only: the package itself is used from the clone (PYTHONPATH, see utils/env.sh), so
# one venv serves every clone with the same setup.py.
"$venv/bin/python" -m pip install -q "$root[test]" >&2
"$venv/bin/python" -m pip uninstall -q -y espnet2_almtok >&2
touch "$venv/.almtok-complete"
log "venv ready"
echo "$venv"

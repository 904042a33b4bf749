#!/usr/bin/env bash
# Source me: builds/reuses the venv (utils/setup_env.sh) and puts it and this clone on the paths.
_almtok_root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
_almtok_venv=$(bash "$_almtok_root/utils/setup_env.sh") || { echo "[env.sh] venv set-up failed" >&2; return 1 2>/dev/null || exit 1; }
export VIRTUAL_ENV=$_almtok_venv
export PATH="$_almtok_venv/bin:$_almtok_root/utils:$PATH"
export PYTHONPATH="$_almtok_root${PYTHONPATH:+:$PYTHONPATH}"
export ALMTOK_ROOT=$_almtok_root
unset _almtok_root _almtok_venv

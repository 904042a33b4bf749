#!/usr/bin/env bash
# Wheels for a GPU machine that has PyTorch but no network (the device tool's machines: Python
# 3.12, torch/torchaudio, numpy, scipy, scikit-learn, transformers... already there): the
# packages the GPU check (utils/gpu_check.sh) imports beyond those, at this venv's versions,
# downloaded into .whl/ (git-ignored). On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site; utils/gpu_check.sh
# Pure-Python packages published only as source are built into wheels here.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$root"
# shellcheck disable=SC1091
. utils/env.sh
py_version=${PY_VERSION:-3.12}
packages="espnet espnet-tts-frontend espnet-g2p-en s3prl typeguard humanfriendly kaldiio librosa soundfile soxr
pooch lazy-loader decorator audioread pystoi torch-complex omegaconf antlr4-python3-runtime nltk inflect
more-itertools jaconv jamo Unidecode defusedxml configargparse sentencepiece"
mkdir -p .whl
for name in $packages; do
  version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) || {
    echo "[gpu_wheels] $name is not in this venv: skipped" >&2; continue; }
  if ls .whl | grep -qi "^$(echo "$name" | tr '-' '_')-${version}-"; then continue; fi
  python -m pip download -q --no-deps --only-binary=:all: --python-version "$py_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$version" 2>/dev/null ||
  python -m pip wheel -q --no-deps -w .whl "$name==$version"
done
du -sh .whl

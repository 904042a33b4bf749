#!/usr/bin/env bash
# Stage 1 for one corpus: local/data.sh --corpus demo|mini_an4|librispeech|audio_dir --out data
set -euo pipefail
corpus=demo
out=data
help_message="Usage: $0 --corpus demo|mini_an4|librispeech|audio_dir [--out data]"
. utils/parse_options.sh
. ./db.sh
case "$corpus" in
  demo) python -m espnet2_almtok.recipe.data_prep demo --db downloads/demo --out "$out" ;;
  mini_an4) python -m espnet2_almtok.recipe.data_prep mini_an4 --tarball "$MINI_AN4" --db downloads --out "$out" ;;
  librispeech)
    [ -n "$LIBRISPEECH" ] || { echo "$0: set LIBRISPEECH in db.sh" >&2; exit 1; }
    python -m espnet2_almtok.recipe.data_prep librispeech --root "$LIBRISPEECH" --out "$out" ;;
  audio_dir)
    [ -n "$AUDIO_DIR" ] || { echo "$0: set AUDIO_DIR in db.sh" >&2; exit 1; }
    python -m espnet2_almtok.recipe.data_prep audio_dir --root "$AUDIO_DIR" --out "$out" ;;
  *) echo "$0: unknown corpus '$corpus' (demo, mini_an4, librispeech, audio_dir)" >&2; exit 1 ;;
esac
for d in "$out"/*/; do utils/validate_data_dir.sh "${d%/}"; done

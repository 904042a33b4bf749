#!/usr/bin/env bash
# Stage 1 for one corpus: local/data.sh --corpus demo|mini_an4|librispeech|audio_dir|asterisk --out data
set -euo pipefail
corpus=demo
out=data
asterisk_langs=""   # --corpus asterisk: prompt languages (default: ASTERISK_LANGS in db.sh)
help_message="Usage: $0 --corpus demo|mini_an4|librispeech|audio_dir|asterisk [--out data] [--asterisk_langs \"en es it ru\"]
  demo:        synthetic espeak-ng speech + sox sounds (offline)
  mini_an4, librispeech, audio_dir: corpora at the paths in db.sh
  asterisk:    real speech (the Asterisk PBX prompts of Debian's asterisk-core-sounds-<lang>[-g722], one
               speaker per language) + real sounds and music (ASTERISK_SOUND_PACKAGES in db.sh); installs
               the missing Debian packages with apt-get when run as root, decodes to downloads/asterisk"
. utils/parse_options.sh
. ./db.sh

# The Debian packages --corpus asterisk reads, for the languages in $1.
asterisk_packages() {
  local lang
  for lang in $1; do echo "asterisk-core-sounds-$lang asterisk-core-sounds-$lang-g722"; done
  echo "$ASTERISK_SOUND_PACKAGES ffmpeg"
}

# Install the Debian packages among "$@" that are missing (as root, with apt-get); otherwise stop, naming them.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "$0: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "$0: --corpus $corpus needs the Debian packages ${missing[*]}: install them" \
         "(sudo apt-get install --no-install-recommends ${missing[*]}) and rerun" >&2
    exit 1
  fi
}

case "$corpus" in
  demo) python -m espnet2_almtok.recipe.data_prep demo --db downloads/demo --out "$out" ;;
  mini_an4) python -m espnet2_almtok.recipe.data_prep mini_an4 --tarball "$MINI_AN4" --db downloads --out "$out" ;;
  librispeech)
    [ -n "$LIBRISPEECH" ] || { echo "$0: set LIBRISPEECH in db.sh" >&2; exit 1; }
    python -m espnet2_almtok.recipe.data_prep librispeech --root "$LIBRISPEECH" --out "$out" ;;
  audio_dir)
    [ -n "$AUDIO_DIR" ] || { echo "$0: set AUDIO_DIR in db.sh" >&2; exit 1; }
    python -m espnet2_almtok.recipe.data_prep audio_dir --root "$AUDIO_DIR" --out "$out" ;;
  asterisk)
    langs=${asterisk_langs:-$ASTERISK_LANGS}
    # shellcheck disable=SC2046  # one word per package
    ensure_packages $(asterisk_packages "$langs")
    python -m espnet2_almtok.recipe.data_prep asterisk --root / --langs "$langs" \
      --sound_packages "$ASTERISK_SOUND_PACKAGES" --db downloads/asterisk --out "$out" ;;
  *) echo "$0: unknown corpus '$corpus' (demo, mini_an4, librispeech, audio_dir, asterisk)" >&2; exit 1 ;;
esac
for d in "$out"/*/; do utils/validate_data_dir.sh "${d%/}"; done

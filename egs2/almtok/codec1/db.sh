# Corpus locations (edit for your machine). The demo corpus needs none: it is synthesised.
MINI_AN4=${MINI_AN4:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)/shared/data/mini_an4.tar.gz}
LIBRISPEECH=${LIBRISPEECH:-}   # root holding train-clean-100/, dev-clean/, test-clean/ (or LibriTTS)
AUDIO_DIR=${AUDIO_DIR:-}       # any directory of wav/flac/ogg/mp3/sph files
# --corpus asterisk (Debian packages; local/data.sh installs them): the prompt languages (each
# asterisk-core-sounds-<lang> + -g722) and the non-speech packages (sounds, music; see SOUND_SOURCES
# in espnet2_almtok/recipe/data_prep.py)
ASTERISK_LANGS=${ASTERISK_LANGS:-en es it ru}
ASTERISK_SOUND_PACKAGES=${ASTERISK_SOUND_PACKAGES-sound-theme-freedesktop frozen-bubble-data}

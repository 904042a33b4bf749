# Corpus locations (edit for your machine). The demo corpus needs none: it is synthesised.
MINI_AN4=${MINI_AN4:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)/shared/data/mini_an4.tar.gz}
LIBRISPEECH=${LIBRISPEECH:-}   # root holding train-clean-100/, dev-clean/, test-clean/ (or LibriTTS)
AUDIO_DIR=${AUDIO_DIR:-}       # any directory of wav/flac/ogg/mp3/sph files

"""Language models over ALMTokenizer (or other codec) tokens: ASR, TTS and audio captioning."""

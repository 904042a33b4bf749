"""ALMTokenizer codec modules.

Shape conventions, stated once for the whole package:
  - waveforms are ``(B, 1, T_wav)`` inside the model and ``(B, T_wav)`` at the ESPnet batch
    boundary (``audio`` in the data loader);
  - frame sequences on the convolution side are ``(B, C, T)`` (channels first, as in dac /
    audiocraft); inside the Transformers they are ``(B, T, C)`` (batch first);
  - ``T`` counts frames at the patchify rate (``fs / hop_length``), ``N = T // w`` counts
    query tokens for window ``w``;
  - codes are ``(B, n_q, N)`` LongTensors (ESPnet's codec ``encode`` returns ``(n_q, B, N)``).
"""

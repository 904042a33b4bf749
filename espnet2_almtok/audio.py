"""Audio reading and validation shared by the Python API, the recipe and the scorers.

Every error names the input (file or utterance id) and says what to do about it.
"""

from pathlib import Path
from typing import Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio

SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


class AudioError(ValueError):
    """Bad audio input; the message names the input and the fix."""


def read_audio(path: Union[str, Path], name: str = None) -> Tuple[np.ndarray, int]:
    """Read ``path`` -> (float32 ``(T,)`` or ``(T, channels)``, sample rate)."""
    name = name or str(path)
    if not Path(path).is_file():
        raise AudioError(f"{name}: audio file {path} does not exist")
    try:
        wav, sr = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises its own LibsndfileError / RuntimeError
        raise AudioError(f"{name}: {path} is not readable audio ({e}); convert it to wav/flac "
                         "(e.g. `sox in.mp3 out.wav`)") from e
    return wav, sr


def to_mono_tensor(wav, name: str = "input") -> torch.Tensor:
    """Array/tensor ``(T,)``, ``(T, C)`` (soundfile) or ``(C, T)`` (C <= 8) -> float ``(T,)`` (mean of channels)."""
    wav = torch.as_tensor(np.asarray(wav) if not torch.is_tensor(wav) else wav).float()
    if wav.dim() == 2:
        # channels are the short axis: soundfile gives (T, C), torchaudio gives (C, T)
        wav = wav.mean(dim=1) if wav.shape[1] <= wav.shape[0] else wav.mean(dim=0)
    if wav.dim() != 1:
        raise AudioError(f"{name}: expected a 1-D or 2-D (channels) waveform, got shape {tuple(wav.shape)}")
    return wav


def validate_waveform(wav: torch.Tensor, name: str = "input") -> None:
    """Raise :class:`AudioError` for empty, silent or non-finite audio."""
    if wav.numel() == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples); remove it from the data")
    if not torch.isfinite(wav).all():
        raise AudioError(f"{name}: the audio contains NaN or inf samples; the file is corrupt")
    if not wav.abs().max() > 0:
        raise AudioError(f"{name}: the audio is all zeros (digital silence); remove it from the data")


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int, name: str = "input") -> torch.Tensor:
    """Resample the last axis from ``orig_sr`` to ``target_sr`` (torchaudio sinc)."""
    if not isinstance(orig_sr, (int, np.integer)) or orig_sr not in SUPPORTED_RATES:
        raise AudioError(f"{name}: unsupported sample rate {orig_sr!r}; use one of {SUPPORTED_RATES} "
                         "(resample with `sox in.wav -r 16000 out.wav`)")
    if orig_sr == target_sr:
        return wav
    return torchaudio.functional.resample(wav, int(orig_sr), int(target_sr))

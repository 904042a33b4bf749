"""Audio reading and validation shared by the Python API, the recipe and the scorers.

Every error names the input (file or utterance id) and says what to do about it.
"""

import math
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio


class AudioError(ValueError):
    """Bad audio input; the message names the input and the fix."""


def check_readable(path: Union[str, Path], name: str) -> None:
    """Raise :class:`AudioError` naming ``path`` if it is not a file this user may read."""
    if not Path(path).is_file():
        raise AudioError(f"{name}: audio file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{name}: audio file {path} cannot be read: permission denied for this user; "
                         "fix its permissions (e.g. `chmod a+r FILE`) or copy it somewhere readable")


def read_audio(path: Union[str, Path], name: str = None) -> Tuple[np.ndarray, int]:
    """Read ``path`` -> (float32 ``(T,)`` or ``(T, channels)``, sample rate)."""
    name = name or str(path)
    check_readable(path, name)
    try:
        wav, sr = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises its own LibsndfileError / RuntimeError
        raise AudioError(f"{name}: {path} is not readable audio ({e}); convert it to wav/flac "
                         "(e.g. `sox in.mp3 out.wav`)") from e
    return wav, sr


PCM_SCALE = {torch.int16: 2.0 ** 15, torch.int32: 2.0 ** 31, torch.int8: 2.0 ** 7}


def to_float(wav, name: str = "input") -> torch.Tensor:
    """An array/tensor as float32; integer PCM is scaled to [-1, 1] (int8/16/32; uint8 centred at 128)."""
    if not torch.is_tensor(wav):
        arr = np.asarray(wav)
        if arr.dtype == object or arr.dtype.kind not in "iuf":
            raise AudioError(f"{name}: expected an array of audio samples, got {type(wav).__name__} "
                             f"(dtype {arr.dtype})")
        wav = arr
    wav = torch.as_tensor(wav)
    if wav.dtype in PCM_SCALE:
        return wav.float() / PCM_SCALE[wav.dtype]
    if wav.dtype == torch.uint8:
        return (wav.float() - 128.0) / 128.0
    if wav.dtype == torch.bool or wav.is_complex():
        raise AudioError(f"{name}: {wav.dtype} samples are not audio; give float samples in [-1, 1] or int16/int32 PCM")
    if not wav.dtype.is_floating_point:
        raise AudioError(f"{name}: integer samples of type {wav.dtype} have no PCM scale; give float "
                         "samples in [-1, 1] or int16/int32 PCM")
    return wav.float()


def to_mono_tensor(wav, name: str = "input", channels_first: Optional[bool] = None) -> torch.Tensor:
    """Array/tensor ``(T,)`` or one multi-channel clip ``(C, T)`` / ``(T, C)`` -> float ``(T,)``
    (the mean of the channels; integer PCM scaled). ``channels_first`` says which axis holds
    the channels; ``None``: the shorter one (soundfile gives ``(T, C)``, torchaudio ``(C, T)``),
    and a square array is refused as ambiguous."""
    wav = to_float(wav, name)
    if wav.dim() == 2 and wav.numel() == 0:
        raise AudioError(f"{name}: the audio is empty (shape {tuple(wav.shape)}); remove it from the data")
    if wav.dim() == 2:
        if channels_first is None:
            if wav.shape[0] == wav.shape[1]:
                raise AudioError(f"{name}: shape {tuple(wav.shape)} is ambiguous (channels first or last?); "
                                 "pass channels_first=True for (C, T) or False for (T, C)")
            channels_first = wav.shape[0] < wav.shape[1]
        wav = downmix(wav if channels_first else wav.T, name)
    if wav.dim() != 1:
        raise AudioError(f"{name}: expected a 1-D or 2-D (channels) waveform, got shape {tuple(wav.shape)}")
    return wav


def downmix(wav: torch.Tensor, name: str = "input") -> torch.Tensor:
    """``(C, T)`` -> ``(T,)``: the mean of the channels. Channels that cancel in the mean (one the
    other inverted: a phase-flipped stereo file) are refused, not coded as silence."""
    mono = wav.mean(dim=0)
    if wav.shape[0] > 1 and wav.numel() and bool(torch.isfinite(wav).all()):
        check_downmix(float(mono.abs().max()), float(wav.abs().max()), wav.shape[0], name)
    return mono


def check_downmix(mono_peak: float, channel_peak: float, channels: int, name: str) -> None:
    """Refuse a downmix whose peak is ~0 although its channels are not: they cancel."""
    if channel_peak > 0 and mono_peak <= 1e-4 * channel_peak:
        raise AudioError(f"{name}: its {channels} channels cancel when averaged to mono (one is the other "
                         "inverted); keep one channel (e.g. `sox in.wav out.wav remix 1`) or fix the phase")


def as_clips(wav, sample_rate: Optional[int], channels_first: Optional[bool] = None) -> Tuple[list, int]:
    """Any supported input -> (list of mono float ``(T,)`` clips, their sample rate).

    ``wav``: a file path (its own rate; ``sample_rate`` must be None or equal); ``(T,)``; one
    multi-channel clip ``(C, T)`` / ``(T, C)`` (:func:`to_mono_tensor`); a batch ``(B, C, T)``;
    or a list of clips of unequal lengths. Integer PCM is scaled to [-1, 1].
    """
    name = "input"
    if isinstance(wav, (str, Path)):
        name = str(wav)
        arr, file_rate = read_audio(wav)
        if sample_rate is not None and sample_rate != file_rate:
            raise AudioError(f"{wav} is {file_rate} Hz but sample_rate={sample_rate} was given; "
                             "leave sample_rate out for a file")
        wav, sample_rate, channels_first = arr, file_rate, False  # soundfile: (T, C)
    if sample_rate is None:
        raise ValueError("sample_rate is required for arrays and tensors (only a file path carries its own)")
    if channels_first is not None and not isinstance(channels_first, (bool, np.bool_)):
        raise ValueError(f"channels_first must be True, False or None, got {channels_first!r}")
    if isinstance(wav, (list, tuple)):
        clips = [to_mono_tensor(w, f"clip {i}", channels_first) for i, w in enumerate(wav)]
    else:
        w = to_float(wav)
        if w.dim() in (1, 2):
            clips = [to_mono_tensor(w, name, channels_first)]
        elif w.dim() == 3:
            if channels_first is False:  # (B, T, C)
                w = w.transpose(1, 2)
            elif channels_first is None and w.shape[1] > w.shape[2]:
                raise AudioError(f"input: a batch of shape {tuple(w.shape)} has more channels than samples as "
                                 "(B, C, T); say its layout: channels_first=True for (B, C, T), False for (B, T, C)")
            clips = [downmix(c, f"clip {i}") for i, c in enumerate(w)]
        else:
            raise AudioError(f"input: expected (T,), (C, T), (T, C), (B, C, T) or a list of clips, "
                             f"got {tuple(w.shape)}")
    if not clips:
        raise AudioError("input: no clips to encode")
    return clips, sample_rate


def validate_waveform(wav: torch.Tensor, name: str = "input") -> None:
    """Raise :class:`AudioError` for empty, silent or non-finite audio."""
    if wav.numel() == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples); remove it from the data")
    if not torch.isfinite(wav).all():
        raise AudioError(f"{name}: the audio contains NaN or inf samples; the file is corrupt")
    if not wav.abs().max() > 0:
        raise AudioError(f"{name}: the audio is all zeros (digital silence); remove it from the data")


MIN_RATE, MAX_RATE = 4000, 384000
MAX_RESAMPLE_KERNEL = 10_000_000  # (target / gcd) x (source / gcd): torchaudio's sinc kernel grows with it


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int, name: str = "input") -> torch.Tensor:
    """Resample the last axis from ``orig_sr`` to ``target_sr`` (torchaudio sinc). Any whole rate
    from 4 to 384 kHz whose ratio to ``target_sr`` reduces to a kernel torchaudio can hold (every
    common rate: 8, 11.025, 12, 16, 22.05, 24, 32, 44.1, 48, 88.2, 96, 192 kHz ...)."""
    if isinstance(orig_sr, (bool, np.bool_)) or not isinstance(orig_sr, (int, np.integer)) \
            or not MIN_RATE <= orig_sr <= MAX_RATE:
        raise AudioError(f"{name}: unsupported sample rate {orig_sr!r}; give a whole number of Hz from {MIN_RATE} to "
                         f"{MAX_RATE} (resample with `sox in.wav -r 16000 out.wav`)")
    if orig_sr == target_sr:
        return wav
    g = math.gcd(int(orig_sr), int(target_sr))
    if (orig_sr // g) * (target_sr // g) > MAX_RESAMPLE_KERNEL:
        raise AudioError(f"{name}: unsupported sample rate {orig_sr} Hz: its ratio to {target_sr} Hz "
                         f"({orig_sr // g}:{target_sr // g}) has no short resampling kernel; resample it to a common "
                         f"rate first (`sox in.wav -r {target_sr} out.wav`)")
    return torchaudio.functional.resample(wav, int(orig_sr), int(target_sr))

"""Mono audio read by sample range (:class:`~espnet2_almtok.codec.streaming.SampleSource`):
from memory, or from a file on disk block by block, so a long file is never loaded whole."""

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import soundfile
import torch
from torch import nn


class TensorSource:
    """An in-memory clip ``(T,)`` read by sample range."""

    def __init__(self, wav: torch.Tensor):
        if wav.dim() != 1:
            raise ValueError(f"TensorSource takes one mono clip (T,), got shape {tuple(wav.shape)}")
        self.wav = wav
        self.num_samples = wav.numel()

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples ``[start, stop)`` ``(stop - start,)``; zeros past the end."""
        part = self.wav[start: min(stop, self.num_samples)]
        if part.numel() < stop - start:
            part = nn.functional.pad(part, (0, stop - start - part.numel()))
        return part


class SoundFileSource:
    """An audio file read by sample range with soundfile (seek + read): float32, channels
    averaged, zeros past the end. Only the samples asked for are in memory.

    Use as a context manager (or call :meth:`close`). ``sample_rate`` is the file's own; the
    caller checks it against the model's.
    """

    def __init__(self, path: Union[str, Path], name: Optional[str] = None):
        from espnet2_almtok.audio import AudioError, check_readable

        self.name = name or str(path)
        check_readable(path, self.name)
        try:
            self.file = soundfile.SoundFile(str(path))
        except Exception as e:  # soundfile raises its own LibsndfileError / RuntimeError
            raise AudioError(f"{self.name}: {path} is not readable audio ({e})") from e
        self.sample_rate = self.file.samplerate
        self.num_samples = self.file.frames

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._read(start, stop)[0]

    def _read(self, start: int, stop: int) -> Tuple[torch.Tensor, float]:
        """-> (the channels' mean ``(stop - start,)``, the peak of the channels themselves)."""
        out, channel_peak = torch.zeros(stop - start), 0.0
        end = min(stop, self.num_samples)
        if end > start:
            self.file.seek(start)
            data = self.file.read(end - start, dtype="float32", always_2d=True)
            out[: data.shape[0]] = torch.from_numpy(data.mean(axis=1))
            channel_peak = float(np.abs(data).max())
        return out, channel_peak

    def validate(self, block: int = 1 << 20) -> None:
        """Raise :class:`~espnet2_almtok.audio.AudioError` (naming the file) for empty, all-zero
        or non-finite audio, reading ``block`` samples at a time."""
        from espnet2_almtok.audio import AudioError, check_downmix

        if self.num_samples == 0:
            raise AudioError(f"{self.name}: the audio is empty (0 samples); remove it from the data")
        peak = channel_peak = 0.0
        for start in range(0, self.num_samples, block):
            part, part_channel_peak = self._read(start, min(self.num_samples, start + block))
            if not torch.isfinite(part).all():
                raise AudioError(f"{self.name}: the audio contains NaN or inf samples; the file is corrupt")
            peak, channel_peak = max(peak, float(part.abs().max())), max(channel_peak, part_channel_peak)
        if self.file.channels > 1:
            check_downmix(peak, channel_peak, self.file.channels, self.name)
        if not peak > 0:
            raise AudioError(f"{self.name}: the audio is all zeros (digital silence); remove it from the data")

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

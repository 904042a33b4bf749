"""Strided 1-D convolution front end (Patchify) and its mirror (DePatchify)."""

from typing import Sequence

import torch
from torch import nn


class ResidualUnit(nn.Module):
    """Dilated conv residual unit; keeps ``(B, C, T)``."""

    def __init__(self, channels: int, dilation: int = 1, kernel_size: int = 7):
        super().__init__()
        pad = (kernel_size - 1) * dilation // 2
        self.block = nn.Sequential(
            nn.ELU(),
            nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=pad),
            nn.ELU(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Patchify(nn.Module):
    """Waveform ``(B, 1, T_wav)`` -> frames ``(B, dim, T_wav // hop_length)``.

    SEANet-style: a stem conv, then per stride a residual unit and a strided conv that doubles
    the channels, then a projection to ``dim``. Zero padding only and no normalisation over
    time, so a frame depends on nearby samples only: padding a clip with zeros does not change
    the frames of the clip itself (what makes batched and single encoding agree).

    ``norm`` (default on): a LayerNorm over each frame's ``dim`` channels, so the frames reach
    the Transformer at the scale of its sinusoidal positions (norms sqrt(dim) and sqrt(dim / 2)). Without it
    a freshly initialised stem gives frames of norm ~0.4 against positions of norm 8 (hidden
    128): the encoder starts out seeing position rather than audio.
    """

    def __init__(self, dim: int, channels: int = 32, strides: Sequence[int] = (2, 4, 5, 8),
                 norm: bool = True):
        super().__init__()
        layers = [nn.Conv1d(1, channels, 7, padding=3)]
        ch = channels
        for s in strides:
            layers += [
                ResidualUnit(ch),
                nn.ELU(),
                nn.Conv1d(ch, ch * 2, kernel_size=2 * s, stride=s, padding=(s + 1) // 2),
            ]
            ch *= 2
        layers += [nn.ELU(), nn.Conv1d(ch, dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim) if norm else None
        self.hop_length = int(torch.tensor(list(strides)).prod())

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T_wav)`` with ``T_wav`` a multiple of ``hop_length`` -> ``(B, dim, T)``."""
        frames = self.net(wav)[..., : wav.shape[-1] // self.hop_length]
        if self.norm is not None:
            frames = self.norm(frames.transpose(1, 2)).transpose(1, 2)
        return frames


class DePatchify(nn.Module):
    """Frames ``(B, dim, T)`` -> waveform ``(B, 1, T * hop_length)`` (transposed convs)."""

    def __init__(self, dim: int, channels: int = 32, strides: Sequence[int] = (8, 5, 4, 2)):
        super().__init__()
        ch = channels * 2 ** len(strides)
        layers = [nn.Conv1d(dim, ch, 7, padding=3)]
        for s in strides:
            layers += [
                nn.ELU(),
                nn.ConvTranspose1d(ch, ch // 2, kernel_size=2 * s, stride=s, padding=s // 2 + s % 2,
                                   output_padding=s % 2),
                ResidualUnit(ch // 2),
            ]
            ch //= 2
        layers += [nn.ELU(), nn.Conv1d(ch, 1, 7, padding=3), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.hop_length = int(torch.tensor(list(strides)).prod())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        wav = self.net(frames)
        return wav[..., : frames.shape[-1] * self.hop_length]

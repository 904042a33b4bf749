"""Strided 1-D convolution front end (Patchify) and its mirror (DePatchify)."""

from typing import Optional, Sequence, Union

import torch
from torch import nn

from espnet2_almtok.codec.norm import RunningStandardize


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

    ``norm``: how the frames are brought to the scale of the Transformer's sinusoidal positions
    (norms sqrt(dim) and sqrt(dim / 2); without a norm a freshly initialised stem gives frames
    of norm ~0.4 against positions of norm 8 at hidden 128: the encoder starts out seeing
    position rather than audio):

    - ``"time"``: each channel standardised over time (and batch) with running statistics
      (:class:`~espnet2_almtok.codec.norm.RunningStandardize`: the same in training and
      inference, frame by frame). What reaches the Transformer is the frames' variation at
      unit scale per channel, never a constant offset. Ours.
    - ``"layer"`` (or ``True``): a LayerNorm over each frame's channels. A frame's common offset
      across time survives it: in training the stem learns to emit nearly the same frame for
      all audio (its variation across time fell from 12 % to 0.4 % of the frames' mean within
      200 steps, ``bench/learning_floor``), and the query layout stays on the
      average-spectrum plateau.
    - ``"none"`` (or ``False``): no normalisation.
    """

    NORMS = ("time", "layer", "none")

    def __init__(self, dim: int, channels: int = 32, strides: Sequence[int] = (2, 4, 5, 8),
                 norm: Union[str, bool] = "layer"):
        super().__init__()
        norm = {True: "layer", False: "none"}.get(norm, norm) if isinstance(norm, bool) else norm
        if norm not in self.NORMS:
            raise ValueError(f"frame_norm must be one of {self.NORMS} (or true = layer, false = none), got {norm!r}")
        self.norm_type = norm
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
        self.norm = {"time": lambda: RunningStandardize(dim), "layer": lambda: nn.LayerNorm(dim),
                     "none": lambda: None}[norm]()
        self.hop_length = int(torch.tensor(list(strides)).prod())

    def forward(self, wav: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, 1, T_wav)`` with ``T_wav`` a multiple of ``hop_length`` -> ``(B, dim, T)``;
        ``frame_lengths`` ``(B,)``: the frames holding real audio, the only ones ``"time"``
        statistics are gathered from in training (default: all)."""
        frames = self.net(wav)[..., : wav.shape[-1] // self.hop_length].transpose(1, 2)  # (B, T, dim)
        if self.norm_type == "time":
            mask = None
            if frame_lengths is not None:
                mask = torch.arange(frames.shape[1], device=frames.device) < frame_lengths.to(frames.device).unsqueeze(1)
            frames = self.norm(frames, mask).to(frames.dtype)
        elif self.norm is not None:
            frames = self.norm(frames)
        return frames.transpose(1, 2)


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

"""Multi-resolution STFT loss/distance (spectral convergence + log-magnitude L1).

ESPnet 202511 has multi-scale *mel* losses but no multi-resolution linear STFT loss; this is
the Parallel WaveGAN formulation, also used as the ``stft_distance`` score in the recipe.
"""

from typing import Sequence

import torch
from torch import nn


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of ``||S - S_hat||_F / ||S||_F + mean|log S - log S_hat|``.

    Inputs are waveforms ``(B, 1, T)`` or ``(B, T)``; returns a scalar.
    """

    def __init__(self, fft_sizes: Sequence[int] = (512, 1024, 2048),
                 hop_sizes: Sequence[int] = (128, 256, 512),
                 win_sizes: Sequence[int] = (512, 1024, 2048)):
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_sizes):
            raise ValueError("fft_sizes, hop_sizes and win_sizes need the same length")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_sizes))
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(win), persistent=False)

    def _mag(self, x: torch.Tensor, i: int) -> torch.Tensor:
        n_fft, hop, win = self.resolutions[i]
        spec = torch.stft(x, n_fft, hop, win, getattr(self, f"window{i}"), return_complex=True)
        return spec.abs().clamp(min=1e-7)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_hat = y_hat.reshape(-1, y_hat.shape[-1]).float()
        y = y.reshape(-1, y.shape[-1]).float()
        total = y.new_zeros(())
        for i in range(len(self.resolutions)):
            m_hat, m = self._mag(y_hat, i), self._mag(y, i)
            sc = torch.linalg.norm(m - m_hat, dim=(1, 2)) / torch.linalg.norm(m, dim=(1, 2))
            total = total + sc.mean() + (m.log() - m_hat.log()).abs().mean()
        return total / len(self.resolutions)

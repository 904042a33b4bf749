"""Semantic objectives: the MAE head (masked frame reconstruction) and the AR head."""

import torch
import torch.nn.functional as F
from torch import nn

from espnet2_almtok.codec.transformer import TransformerStack


def random_frame_mask(batch: int, frames: int, ratio: float, device=None,
                      generator: torch.Generator = None) -> torch.Tensor:
    """``(B, T)`` bool, True for the ``round(ratio * T)`` frames masked in each row."""
    n_mask = int(round(ratio * frames))
    mask = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    if n_mask == 0:
        return mask
    scores = torch.rand(batch, frames, device=device, generator=generator)
    idx = scores.topk(n_mask, dim=1).indices
    return mask.scatter(1, idx, True)


class MAEHead(nn.Module):
    """Light decoder: encoder frame outputs ``(B, T, C)`` -> targets ``(B, T, target_dim)``.

    The loss is the L1 distance on the masked frames only, as in masked autoencoders.
    """

    def __init__(self, dim: int, target_dim: int, num_layers: int = 1, num_heads: int = 4):
        super().__init__()
        self.decoder = TransformerStack(dim, num_layers, num_heads) if num_layers > 0 else nn.Identity()
        self.proj = nn.Linear(dim, target_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(self.decoder(frames))

    def loss(self, frames: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``frames`` ``(B, T, C)``, ``target`` ``(B, T, target_dim)``, ``mask`` ``(B, T)``."""
        if not mask.any():
            return frames.new_zeros(())
        pred = self.forward(frames)
        return F.l1_loss(pred[mask], target[mask])


class ARHead(nn.Module):
    """Small causal Transformer over quantized queries predicting the next first-layer token.

    Input: first-layer quantized latents ``(B, N, D)``; output logits ``(B, N, K)``; the loss is
    the cross-entropy of step ``n``'s prediction against token ``n + 1``.
    """

    def __init__(self, input_dim: int, codebook_size: int, dim: int = 256, num_layers: int = 2,
                 num_heads: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(input_dim, dim)
        self.transformer = TransformerStack(dim, num_layers, num_heads, causal=True)
        self.proj_out = nn.Linear(dim, codebook_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.transformer(self.proj_in(latents)))

    def loss(self, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``latents`` ``(B, N, D)``, ``codes`` ``(B, N)`` first-layer tokens."""
        if latents.shape[1] < 2:
            return latents.new_zeros(())
        logits = self.forward(latents[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes[:, 1:].reshape(-1))

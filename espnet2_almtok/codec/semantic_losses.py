"""Semantic objectives: the MAE head (masked frame reconstruction) and the AR head along RVQ depth."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from espnet2_almtok.codec.transformer import TransformerStack


def random_frame_mask(batch: int, frames: int, ratio: float, device=None,
                      generator: Optional[torch.Generator] = None,
                      lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(B, T)`` bool, True for the frames masked in each row.

    Row ``b`` masks ``round(ratio * L_b)`` of its first ``L_b`` frames (``L_b = lengths[b]``,
    ``T`` when ``lengths`` is None), chosen uniformly; padding frames are never masked.
    """
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long, device=device)
    lengths = lengths.to(device=device, dtype=torch.long).clamp(max=frames)
    n_mask = torch.round(ratio * lengths.to(torch.float64)).to(torch.long)  # (B,)
    scores = torch.rand(batch, frames, device=device, generator=generator)
    valid = torch.arange(frames, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    scores = scores.masked_fill(~valid, 2.0)  # padding sorts last
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each frame's score in its row
    return rank < n_mask.unsqueeze(1)


class MAEHead(nn.Module):
    """Light decoder: encoder frame outputs ``(B, T, C)`` -> targets ``(B, T, target_dim)``.

    The loss is the L1 distance on the masked frames only, as in masked autoencoders.
    """

    def __init__(self, dim: int, target_dim: int, num_layers: int = 1, num_heads: int = 4):
        super().__init__()
        self.decoder = TransformerStack(dim, num_layers, num_heads) if num_layers > 0 else nn.Identity()
        self.proj = nn.Linear(dim, target_dim)

    def forward(self, frames: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if isinstance(self.decoder, TransformerStack):
            return self.proj(self.decoder(frames, padding_mask=padding_mask))
        return self.proj(self.decoder(frames))

    def loss(self, frames: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
             padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``frames`` ``(B, T, C)``, ``target`` ``(B, T, target_dim)``, ``mask`` ``(B, T)`` (True
        = masked, scored), ``padding_mask`` ``(B, T)`` (True = padding, not attended)."""
        if not mask.any():
            return frames.new_zeros(())
        pred = self.forward(frames, padding_mask)
        return F.l1_loss(pred[mask], target[mask])


class ARHead(nn.Module):
    """Autoregression along RVQ depth: a light causal Transformer over ``[q_1, ..., q_{n_q}]``.

    For each token position the per-layer quantized vectors form a sequence of length ``n_q``;
    position ``k`` (layers ``<= k``) predicts layer ``k + 1``'s vector. The loss is the MSE
    between L2-normalised prediction and L2-normalised, detached target, so the deeper layers
    become predictable from the first (what an LM with a depth or delay decoder needs). The
    input keeps its gradient: through the quantizer's straight-through latents it reaches the
    encoder.

    Args:
        input_dim: codebook space width ``D``.
        n_q: number of RVQ layers (the sequence length).
        dim / num_layers / num_heads: the causal Transformer.
    """

    def __init__(self, input_dim: int, n_q: int, dim: int = 256, num_layers: int = 2,
                 num_heads: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(input_dim, dim)
        self.depth_embedding = nn.Parameter(torch.randn(max(n_q, 1), dim) * 0.02)
        self.transformer = TransformerStack(dim, num_layers, num_heads, causal=True)
        self.proj_out = nn.Linear(dim, input_dim)
        self.n_q = n_q

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents`` ``(B, K, N, D)`` (layers ``1..K``) -> predictions ``(B, K, N, D)``; slice
        ``k`` predicts layer ``k + 2`` (1-based) from layers ``<= k + 1``."""
        b, k, n, d = latents.shape
        seq = latents.permute(0, 2, 1, 3).reshape(b * n, k, d)  # one depth sequence per token
        x = self.proj_in(seq) + self.depth_embedding[:k]
        pred = self.proj_out(self.transformer(x))
        return pred.reshape(b, n, k, d).permute(0, 2, 1, 3)

    def loss(self, latents: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``latents`` ``(B, n_q, N, D)`` per-layer quantized vectors; ``mask`` ``(B, N)`` True
        for real tokens. Returns the mean over layers ``2..n_q`` and real tokens."""
        if latents.shape[1] < 2:
            return latents.new_zeros(())
        pred = self.forward(latents[:, :-1])  # (B, n_q - 1, N, D)
        target = latents[:, 1:].detach()
        err = (F.normalize(pred, dim=-1) - F.normalize(target, dim=-1)).pow(2).sum(-1)  # (B, n_q-1, N)
        if mask is None:
            return err.mean()
        w = mask.unsqueeze(1).to(err.dtype).expand_as(err)
        return (err * w).sum() / w.sum().clamp(min=1.0)

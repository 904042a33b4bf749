"""Residual vector quantizer whose codebooks start from semantic priors.

A learned linear map takes encoder queries ``(B, N, C)`` into the codebook space ``(B, N, D)``
(``D`` = the SSL feature width of the priors); ``n_q`` codebooks of ``K`` entries each quantize
the running residual; a second linear map returns ``(B, N, C)``. Each codebook can start from a
``(K, D)`` ``.npy`` of k-means centroids and be frozen (a buffer-like parameter with
``requires_grad=False``) or learned with the VQ-VAE codebook loss.
"""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def load_codebook(path: Union[str, Path], codebook_size: int, dim: int) -> torch.Tensor:
    """Read a ``(codebook_size, dim)`` centroid matrix from ``path`` (``.npy``), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"semantic-prior codebook {path} does not exist; run the recipe's prior-extraction "
            "stage (egs2/almtok/codec1/run.sh --stage 3) or set codebook_init to null")
    arr = np.load(path)
    if arr.shape != (codebook_size, dim):
        raise ValueError(
            f"semantic-prior codebook {path} has shape {arr.shape}, expected "
            f"({codebook_size}, {dim}) = (codebook_size, codebook_dim) from the config; extract "
            "priors with the same codebook_size and SSL layer width")
    if not np.isfinite(arr).all():
        raise ValueError(f"semantic-prior codebook {path} contains NaN/inf")
    return torch.from_numpy(arr.astype(np.float32))


class VectorQuantizer(nn.Module):
    """One codebook ``(K, D)``: nearest-neighbour (L2) lookup with a straight-through estimator."""

    def __init__(self, codebook_size: int, dim: int, init: Optional[torch.Tensor] = None,
                 frozen: bool = False):
        super().__init__()
        weight = init.clone() if init is not None else torch.randn(codebook_size, dim) / dim ** 0.5
        self.codebook = nn.Parameter(weight, requires_grad=not frozen)
        self.frozen = frozen

    @property
    def size(self) -> int:
        return self.codebook.shape[0]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> indices ``(...)`` of the nearest codebook entry (L2)."""
        flat = z.reshape(-1, z.shape[-1])
        cb = self.codebook
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.t() + cb.pow(2).sum(1).unsqueeze(0)
        return dist.argmin(dim=1).reshape(z.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """indices ``(...)`` -> vectors ``(..., D)``."""
        return F.embedding(codes, self.codebook)

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z``: ``(B, N, D)`` -> (straight-through quantized, codes ``(B, N)``, commit, codebook loss)."""
        codes = self.nearest(z.detach())
        q = self.lookup(codes)
        commit = F.mse_loss(z, q.detach())
        cb_loss = z.new_zeros(()) if self.frozen else F.mse_loss(q, z.detach())
        return z + (q - z).detach(), codes, commit, cb_loss


class ResidualVQ(nn.Module):
    """``n_q`` residual codebooks in a projected space.

    Args:
        input_dim: encoder width ``C``.
        codebook_dim: codebook space width ``D`` (the SSL feature width of the priors).
        codebook_size: entries per codebook ``K``.
        n_q: number of residual layers.
        codebook_init: per-layer ``.npy`` paths of ``(K, D)`` centroids (``None`` entries = random).
        frozen: per-layer switch; a frozen codebook never changes.
    """

    def __init__(self, input_dim: int, codebook_dim: int, codebook_size: int, n_q: int = 3,
                 codebook_init: Optional[Sequence[Optional[str]]] = None,
                 frozen: Union[bool, Sequence[bool]] = False):
        super().__init__()
        codebook_init = list(codebook_init) if codebook_init else [None] * n_q
        frozen = [bool(frozen)] * n_q if isinstance(frozen, (bool, int)) else list(frozen)
        if len(codebook_init) != n_q or len(frozen) != n_q:
            raise ValueError(f"codebook_init ({len(codebook_init)}) and frozen ({len(frozen)}) "
                             f"need one entry per codebook (n_q={n_q})")
        self.project_in = nn.Linear(input_dim, codebook_dim)
        self.project_out = nn.Linear(codebook_dim, input_dim)
        self.layers = nn.ModuleList(
            VectorQuantizer(
                codebook_size, codebook_dim,
                load_codebook(p, codebook_size, codebook_dim) if p else None, frozen=f)
            for p, f in zip(codebook_init, frozen))
        self.n_q = n_q
        self.codebook_size = codebook_size

    def forward(self, h: torch.Tensor, n_q: Optional[int] = None):
        """``h``: ``(B, N, C)`` -> (quantized ``(B, N, C)``, codes ``(B, n_q, N)``, per-layer
        quantized latents ``(B, n_q, N, D)``, commitment loss, codebook loss)."""
        n_q = n_q or self.n_q
        residual = self.project_in(h)
        total = torch.zeros_like(residual)
        codes: List[torch.Tensor] = []
        latents: List[torch.Tensor] = []
        commit = h.new_zeros(())
        cb_loss = h.new_zeros(())
        for layer in self.layers[:n_q]:
            q, c, l_commit, l_cb = layer(residual)
            residual = residual - q.detach()
            total = total + q
            codes.append(c)
            latents.append(q)
            commit = commit + l_commit
            cb_loss = cb_loss + l_cb
        return self.project_out(total), torch.stack(codes, 1), torch.stack(latents, 1), commit, cb_loss

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``(B, n_q', N)`` (``n_q' <= n_q``) -> quantized ``(B, N, C)``."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be (B, n_q, N), got shape {tuple(codes.shape)}")
        if codes.shape[1] > self.n_q:
            raise ValueError(f"codes have {codes.shape[1]} codebooks, the model has {self.n_q}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"codes out of range [0, {self.codebook_size}): min={int(codes.min())}, "
                f"max={int(codes.max())}; were they made by a model with another codebook size?")
        total = sum(layer.lookup(codes[:, i]) for i, layer in enumerate(self.layers[: codes.shape[1]]))
        return self.project_out(total)

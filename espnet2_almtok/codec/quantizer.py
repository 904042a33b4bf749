"""Residual vector quantizer whose codebooks start from semantic priors.

A learned linear map takes encoder queries ``(B, N, C)`` into the codebook space ``(B, N, D)``
(``D`` = the SSL feature width of the priors), :class:`CodebookSpaceNorm` standardises it there
(on by default; see its docstring for why); ``n_q`` codebooks of ``K`` entries each quantize
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

from espnet2_almtok.codec.norm import RunningStandardize


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


def masked_mse(x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean squared error over ``(B, N, D)`` tensors, counting only positions where ``mask``
    ``(B, N)`` is True (all of them when ``mask`` is None)."""
    err = (x - y).pow(2).mean(-1)  # (B, N)
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


class CodebookSpaceNorm(RunningStandardize):
    """Standardise projected encoder outputs ``(B, N, D)`` per dimension, then give them the
    per-dimension mean and spread of the first codebook's rows (``target``, ``(K, D)``).

    It codes with running statistics in training as at inference (:class:`RunningStandardize`):
    a training-mode forward gives the codes an eval-mode forward gives. (An earlier version
    normalised training batches with their own statistics, as BatchNorm does; at 4 clips x 3 s
    a third of the layer-3 codes differed from the codes inference gives.)

    Why: the semantic priors are k-means centroids of features that are normalised per
    dimension (s3prl's MFCC/fbank upstreams apply CMVN; SSL layers have their own scale), while
    the encoder's output drifts in offset and scale as it trains. Without this, that drift moves
    every token towards one centroid: with frozen MFCC priors the first codebook fell from ~20
    codes in use to one within 25-50 steps on real speech, whatever the learning rate or
    commitment weight (``bench/code_usage_trace.py``).
    """

    def __init__(self, dim: int, target: torch.Tensor, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(dim, target.mean(0), target.std(0), momentum, eps)


class VectorQuantizer(nn.Module):
    """One codebook ``(K, D)``: nearest-neighbour (L2) lookup."""

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

    def forward(self, residual: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """``residual`` ``(B, N, D)`` -> (codebook vectors ``(B, N, D)`` (differentiable only
        w.r.t. a learnable codebook), codes ``(B, N)``, commitment loss, codebook loss).

        ``mask`` ``(B, N)`` (True = a real token) restricts both losses to real tokens.
        """
        codes = self.nearest(residual.detach())
        q = self.lookup(codes)
        commit = masked_mse(residual, q.detach(), mask)
        cb_loss = residual.new_zeros(()) if self.frozen else masked_mse(q, residual.detach(), mask)
        return q, codes, commit, cb_loss


class ResidualVQ(nn.Module):
    """``n_q`` residual codebooks in a projected space.

    Straight-through estimation is done once, over the sum of the ``n_q`` codebook vectors:
    ``z_q = z + (sum_k c_k - z).detach()``, so the gradient the decoder sends to the encoder is
    the same whatever ``n_q`` is (a per-layer straight-through summed over layers would scale
    it by ``n_q``).

    Args:
        input_dim: encoder width ``C``.
        codebook_dim: codebook space width ``D`` (the SSL feature width of the priors).
        codebook_size: entries per codebook ``K``.
        n_q: number of residual layers.
        codebook_init: per-layer ``.npy`` paths of ``(K, D)`` centroids (``None`` entries = random).
        frozen: per-layer switch; a frozen codebook never changes.
        input_norm: standardise the projected input (:class:`CodebookSpaceNorm`) to the first
            codebook's per-dimension mean and spread; its statistics stop updating while
            ``project_in`` is frozen.
    """

    def __init__(self, input_dim: int, codebook_dim: int, codebook_size: int, n_q: int = 3,
                 codebook_init: Optional[Sequence[Optional[str]]] = None,
                 frozen: Union[bool, Sequence[bool]] = False, input_norm: bool = True):
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
        self.input_norm = CodebookSpaceNorm(codebook_dim, self.layers[0].codebook) if input_norm else None
        self.n_q = n_q
        self.codebook_size = codebook_size

    def check_n_q(self, n_q: Optional[int]) -> int:
        if n_q is None:
            return self.n_q
        if isinstance(n_q, (bool, np.bool_)) or not isinstance(n_q, (int, np.integer)) or not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be an integer in 1..{self.n_q} (the model's codebooks), got {n_q!r}")
        return int(n_q)  # numpy integers too, as windows are

    def forward(self, h: torch.Tensor, n_q: Optional[int] = None, mask: Optional[torch.Tensor] = None):
        """``h``: ``(B, N, C)`` -> (quantized ``(B, N, C)``, codes ``(B, n_q, N)``, per-layer
        latents ``(B, n_q, N, D)``, commitment loss, codebook loss).

        The per-layer latent ``k`` is ``r_k + (c_k - r_k).detach()`` for the residual ``r_k`` it
        quantizes: its value is the codebook vector ``c_k`` and its gradient goes to the encoder
        (the AR loss along depth trains through it). ``mask`` ``(B, N)`` (True = a real token)
        keeps padded tokens out of the losses.

        It runs in float32 under autocast too (bf16/fp16 training and inference alike): the
        projection, the norm, the nearest-code search and the VQ losses, so the codes of a
        training step are the codes inference gives (under bf16 a few % of the nearest-code
        choices flip otherwise).
        """
        with torch.autocast(h.device.type, enabled=False):
            return self._forward(h.float(), self.check_n_q(n_q), mask)

    def _forward(self, h: torch.Tensor, n_q: int, mask: Optional[torch.Tensor]):
        z = self.project_in(h)
        if self.input_norm is not None:
            z = self.input_norm(z, mask, update=self.project_in.weight.requires_grad)
        residual = z
        total = torch.zeros_like(z)
        codes: List[torch.Tensor] = []
        latents: List[torch.Tensor] = []
        commit = h.new_zeros(())
        cb_loss = h.new_zeros(())
        for layer in self.layers[:n_q]:
            c, idx, l_commit, l_cb = layer(residual, mask)
            latents.append(residual + (c - residual).detach())
            residual = residual - c.detach()
            total = total + c
            codes.append(idx)
            commit = commit + l_commit
            cb_loss = cb_loss + l_cb
        # One straight-through for the whole stack; learnable codebooks learn from the codebook
        # loss (VQ-VAE), not from the decoder.
        quantized = z + (total - z).detach()
        return self.project_out(quantized), torch.stack(codes, 1), torch.stack(latents, 1), commit, cb_loss

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``(B, n_q', N)`` (``n_q' <= n_q``) -> quantized ``(B, N, C)``."""
        self.check_codes(codes)
        total = sum(layer.lookup(codes[:, i]) for i, layer in enumerate(self.layers[: codes.shape[1]]))
        return self.project_out(total)

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise ValueError naming the problem unless ``codes`` is ``(B, n_q', N)`` in range."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be (B, n_q, N), got shape {tuple(codes.shape)}")
        if codes.shape[1] > self.n_q:
            raise ValueError(f"codes have {codes.shape[1]} codebooks, the model has {self.n_q}")
        if codes.shape[1] == 0:
            raise ValueError("codes have 0 codebooks; give at least the first")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"codes out of range [0, {self.codebook_size}): min={int(codes.min())}, "
                f"max={int(codes.max())}; were they made by a model with another codebook size?")

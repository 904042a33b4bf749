"""Pre-norm Transformer stack over ``(B, T, C)`` with sinusoidal positions (and, optionally, an
ALiBi distance bias on the attention logits, or group-local attention in the first layers)."""

import math
from contextlib import contextmanager
from typing import Optional

import torch
from torch import nn


def sinusoidal_positions(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """``(length, dim)`` fixed sinusoidal position table (works for any length)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table.to(dtype) if dtype is not None else table


ATTENTION_BIASES = ("none", "alibi")


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """``(H,)`` ALiBi head slopes ``2^(-8 (h+1) / H)`` (Press et al., 2022): the first head
    looks mostly at its neighbours, the last almost anywhere."""
    return torch.pow(2.0, -8.0 * torch.arange(1, num_heads + 1, dtype=torch.float32) / num_heads)


def alibi_bias(length: int, num_heads: int, device=None, dtype=None) -> torch.Tensor:
    """``(H, T, T)`` additive attention bias ``-slope_h * |i - j|`` (symmetric: bidirectional)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    dist = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs()
    bias = -alibi_slopes(num_heads).to(device).view(-1, 1, 1) * dist
    return bias.to(dtype) if dtype is not None else bias


@contextmanager
def no_fastpath_under_autocast(device_type: str):
    """PyTorch's Transformer fast path (taken without grad, in eval) ignores CPU autocast: under
    bf16 autocast on a CPU an inference pass then computed other values than a training pass
    (a few % of the codes differed). Under autocast on any device this turns the fast path off
    for the call, so training and inference run the same layers (on CUDA, PyTorch already does)."""
    if not (torch.is_autocast_enabled(device_type) and torch.backends.mha.get_fastpath_enabled()):
        yield
        return
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


class TransformerStack(nn.Module):
    """``num_layers`` pre-norm Transformer layers; bidirectional unless ``causal``.

    Args:
        dim: model width ``C``.
        num_layers, num_heads, ff_mult, dropout: the usual.
        causal: use a causal (lower-triangular) attention mask.
        attention_bias: ``"none"`` (positions from the sinusoidal table only) or ``"alibi"``
            (also a per-head penalty on attention that grows with distance: every position
            starts out attending to its neighbourhood; ours, the paper does not say).
        local_layers: the first ``local_layers`` layers attend only within each position's
            group of ``group_size`` consecutive positions (given to :meth:`forward`; the
            interleaved window of the query layout); the layers above attend everywhere.
            Parameter-free (an attention mask); ours, the paper does not say. With no
            ``group_size`` every layer attends everywhere.
    """

    def __init__(self, dim: int, num_layers: int, num_heads: int, ff_mult: int = 4,
                 dropout: float = 0.0, causal: bool = False, attention_bias: str = "none",
                 local_layers: int = 0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if attention_bias not in ATTENTION_BIASES:
            raise ValueError(f"attention_bias={attention_bias!r}: choose one of {ATTENTION_BIASES}")
        if isinstance(local_layers, bool) or not isinstance(local_layers, int) or not 0 <= local_layers <= num_layers:
            raise ValueError(f"local_layers must be an integer from 0 to num_layers={num_layers}, got {local_layers!r}")
        if local_layers and causal:
            raise ValueError("local_layers is for the bidirectional query Transformers, not a causal stack")
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim * ff_mult, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.causal = causal
        self.num_heads = num_heads
        self.attention_bias = attention_bias
        self.local_layers = local_layers

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                group_size: Optional[int] = None) -> torch.Tensor:
        """``x``: ``(B, T, C)``; ``padding_mask``: ``(B, T)`` True at padding; ``group_size``:
        the groups of the local layers (``T`` a multiple of it). Returns ``(B, T, C)``."""
        with no_fastpath_under_autocast(x.device.type):
            return self._forward(x, padding_mask, group_size)

    def _forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor], group_size: Optional[int]) -> torch.Tensor:
        t = x.shape[1]
        if padding_mask is not None and not bool(padding_mask.any()):
            padding_mask = None  # nothing padded: no mask, so SDPA may pick its fused (flash) kernel
        if self.local_layers and group_size is not None:
            return self._forward_local(x, padding_mask, group_size)
        x = x + sinusoidal_positions(t, x.shape[2], x.device, x.dtype)
        attn_mask = None
        if self.causal:
            attn_mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device, dtype=x.dtype)
        if self.attention_bias == "alibi":
            bias = alibi_bias(t, self.num_heads, x.device, x.dtype)  # (H, T, T)
            bias = bias if attn_mask is None else bias + attn_mask
            attn_mask = bias.repeat(x.shape[0], 1, 1)  # (B * H, T, T), batch-major as attention expects
        if padding_mask is not None:
            padding_mask = padding_mask.to(torch.bool)
            if attn_mask is not None:  # one float mask avoids a bool/float mix warning
                padding_mask = torch.zeros_like(padding_mask, dtype=x.dtype).masked_fill(padding_mask, float("-inf"))
        x = self.layers(x, mask=attn_mask, src_key_padding_mask=padding_mask,
                        is_causal=self.causal and self.attention_bias == "none")
        return self.norm(x)

    def _forward_local(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor], group_size: int) -> torch.Tensor:
        """The first ``local_layers`` layers with a block-diagonal mask of ``group_size`` blocks,
        the rest as :meth:`forward`'s layers. The local layers take no padding mask: a group is
        padding as a whole or not at all, so a real group never sees padding there."""
        t = x.shape[1]
        if t % group_size:
            raise ValueError(f"sequence length {t} is not a multiple of the group size {group_size}")
        x = x + sinusoidal_positions(t, x.shape[2], x.device, x.dtype)
        group = torch.arange(t, device=x.device) // group_size
        local = group.unsqueeze(0) != group.unsqueeze(1)  # (T, T) True = not attended
        rest = None
        if self.attention_bias == "alibi":  # (B * H, T, T) float masks, batch-major
            bias = alibi_bias(t, self.num_heads, x.device, x.dtype)
            local = bias.masked_fill(local, float("-inf")).repeat(x.shape[0], 1, 1)
            rest = bias.repeat(x.shape[0], 1, 1)
        if padding_mask is not None:
            padding_mask = padding_mask.to(torch.bool)
            if rest is not None:
                padding_mask = torch.zeros_like(padding_mask, dtype=x.dtype).masked_fill(padding_mask, float("-inf"))
        for i, layer in enumerate(self.layers.layers):
            if i < self.local_layers:
                x = layer(x, src_mask=local)
            else:
                x = layer(x, src_mask=rest, src_key_padding_mask=padding_mask)
        return self.norm(x)

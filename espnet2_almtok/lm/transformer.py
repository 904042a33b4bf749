"""Decoder-only (causal) Transformer with a key/value cache, over ``(B, L, C)``."""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from espnet2_almtok.codec.transformer import sinusoidal_positions


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Optional[dict] = None) -> torch.Tensor:
        """``x`` ``(B, T, C)``; ``mask`` ``(B, 1, T, T_keys)`` True where a query may attend.

        With ``cache`` (a dict, updated in place) the keys/values of earlier calls are prepended.
        """
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, cache=None):
        x = x + self.drop(self.attn(self.norm1(x), mask, cache))
        return x + self.drop(self.ff(self.norm2(x)))


class CausalTransformer(nn.Module):
    """Pre-norm causal Transformer with sinusoidal positions and an incremental-decoding cache.

    Sequences in a batch may be *left*-padded (prompts of unequal length at inference): the
    ``valid`` mask says which positions hold tokens, and positions are counted per sequence
    from its first valid token.
    """

    def __init__(self, dim: int, num_layers: int, num_heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ff_mult, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def new_cache(self) -> List[dict]:
        return [dict() for _ in self.layers]

    def forward(self, x: torch.Tensor, valid: torch.Tensor, cache: Optional[List[dict]] = None,
                past_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``(B, T, C)`` embeddings of new positions; ``valid`` ``(B, T)`` bool.

        ``past_valid`` ``(B, T_past)``: validity of the positions already in ``cache``.
        Returns ``(B, T, C)``.
        """
        b, t, _ = x.shape
        past = past_valid if past_valid is not None else valid.new_zeros(b, 0)
        keys_valid = torch.cat([past, valid], dim=1)  # (B, T_past + T)
        t_past = past.shape[1]
        pos = (keys_valid.long().cumsum(1) - 1).clamp(min=0)[:, t_past:]  # (B, T)
        table = sinusoidal_positions(int(pos.max()) + 1, self.dim, x.device, x.dtype)
        x = x + table[pos]
        causal = torch.ones(t, t_past + t, dtype=torch.bool, device=x.device).tril(t_past)
        mask = causal[None] & keys_valid[:, None, :]
        # a padded query row would attend to nothing (NaN): let it see itself
        rows = torch.arange(t, device=x.device)[:, None] + t_past
        mask = mask | (rows == torch.arange(t_past + t, device=x.device)[None])[None]
        mask = mask[:, None]  # (B, 1, T, T_keys)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache[i] if cache is not None else None)
        return self.norm(x)


def reorder_cache(cache: List[dict], index: torch.Tensor) -> None:
    """Select batch rows of a cache in place (beam search)."""
    for layer in cache:
        for name in ("k", "v"):
            layer[name] = layer[name].index_select(0, index)

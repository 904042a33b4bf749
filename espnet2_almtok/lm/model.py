"""``ALMTokLM``: the decoder-only LM over text + codec tokens, as an ESPnet model.

Shapes: ``B`` batch, ``L`` positions, ``S`` streams (1 in the flat layout, ``n_q`` in the
delay layout), ``V`` vocabulary size, ``C`` model width.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from typeguard import typechecked

from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel

from espnet2_almtok.lm.transformer import CausalTransformer
from espnet2_almtok.lm.vocab import PAD, Vocabulary


class ALMTokLM(AbsESPnetModel):
    """Embeds the sum of the ``S`` streams, runs a causal Transformer, predicts ``S`` streams.

    Args:
        vocab_size: ``V`` (text + audio + special tokens, see :mod:`espnet2_almtok.lm.vocab`).
        num_streams: ``S``.
        dim, num_layers, num_heads, ff_mult, dropout: Transformer sizes.
        max_len: context length in positions (the data's context policy enforces it).
    """

    @typechecked
    def __init__(self, vocab_size: int, num_streams: int = 1, dim: int = 256, num_layers: int = 6,
                 num_heads: int = 4, ff_mult: int = 4, dropout: float = 0.1, max_len: int = 2048):
        super().__init__()
        self.vocab_size = vocab_size
        self.num_streams = num_streams
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.decoder = CausalTransformer(dim, num_layers, num_heads, ff_mult, dropout)
        self.heads = nn.ModuleList(nn.Linear(dim, vocab_size) for _ in range(num_streams))

    # ------------------------------------------------------------------ core
    def logits(self, seq: torch.Tensor, valid: torch.Tensor, cache: Optional[List[dict]] = None,
               past_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``seq`` ``(B, L, S)`` ids, ``valid`` ``(B, L)`` -> logits ``(B, L, S, V)``."""
        if seq.dim() != 3 or seq.shape[2] != self.num_streams:
            raise ValueError(f"seq must be (B, L, S={self.num_streams}), got {tuple(seq.shape)}")
        x = self.embed(seq).sum(2)
        h = self.decoder(x, valid, cache, past_valid)
        return torch.stack([head(h) for head in self.heads], dim=2)

    def forward(self, dec_seq: torch.Tensor, dec_seq_lengths: torch.Tensor, prefix_len: torch.Tensor,
                prefix_len_lengths: Optional[torch.Tensor] = None, **kwargs
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Next-token cross-entropy on the target segments.

        Args:
            dec_seq: ``(B, L, S)`` right-padded sequences (prompt + target + ``<eos>``).
            dec_seq_lengths: ``(B,)``.
            prefix_len: ``(B, 1)`` prompt lengths; positions ``>= prefix_len`` are scored.
        """
        if dec_seq.dim() == 2:
            dec_seq = dec_seq.unsqueeze(-1)
        b, length, _ = dec_seq.shape
        if length > self.max_len:
            raise ValueError(f"batch has sequences of {length} positions > max_len={self.max_len}; the "
                             "task's preprocessor applies the context policy, was it bypassed?")
        pos = torch.arange(length, device=dec_seq.device)[None]
        valid = pos < dec_seq_lengths[:, None]
        logits = self.logits(dec_seq[:, :-1], valid[:, :-1])  # (B, L-1, S, V)
        target = dec_seq[:, 1:]
        scored = (pos[:, 1:] >= prefix_len.view(-1, 1)) & valid[:, 1:]  # (B, L-1)
        mask = scored[..., None] & (target != PAD)  # (B, L-1, S)
        if not mask.any():
            raise ValueError("batch has no target tokens to score (all prompts fill their sequences)")
        loss = F.cross_entropy(logits[mask], target[mask])
        with torch.no_grad():
            acc = (logits[mask].argmax(-1) == target[mask]).float().mean()
        stats = dict(loss=loss.detach(), acc=acc, ppl=loss.detach().exp())
        return force_gatherable((loss, stats, torch.tensor(b, dtype=loss.dtype)), loss.device)

    def collect_feats(self, **batch: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {}


def lm_max_len(lm_conf: Optional[dict]) -> int:
    """The context length of an ``lm_conf`` (the class default where it is not set)."""
    import inspect

    default = inspect.signature(ALMTokLM).parameters["max_len"].default
    return int((lm_conf or {}).get("max_len", default))


def build_lm(token_list: List[str], layout: str, lm_conf: Optional[dict] = None) -> ALMTokLM:
    """The LM of a training config (``token_list``, ``layout``, ``lm_conf``), untrained.

    Used by ``ALMTokLMTask.build_model`` and by ``lm_inference`` (which so avoids importing
    ESPnet's task machinery).
    """
    vocab = Vocabulary.from_token_list(token_list)
    num_streams = 1 if layout == "flat" else vocab.n_q
    return ALMTokLM(vocab_size=len(vocab), num_streams=num_streams, **(lm_conf or {}))

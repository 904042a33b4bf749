"""Decoding for :class:`~espnet2_almtok.lm.model.ALMTokLM`: greedy, top-k/top-p sampling, beam search.

Decoding is constrained by the target modality, so every output is well formed:

* text targets: only text pieces and ``<eos>``;
* audio targets, flat layout: position ``k`` of the segment takes codebook ``k mod n_q``'s
  ids, ``<eos>`` only at a frame boundary;
* audio targets, delay layout: stream ``q`` takes codebook ``q``'s ids where frame ``p - q``
  exists; stream 0 ends the segment with ``<empty>``, then the delayed streams are flushed.

Greedy and sampling decode a batch of prompts together (left-padded, with a key/value cache);
beam search (text targets) decodes one prompt at a time with its beams as the batch.
"""

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from espnet2_almtok.lm.layout import SequenceBuilder
from espnet2_almtok.lm.model import ALMTokLM
from espnet2_almtok.lm.transformer import reorder_cache
from espnet2_almtok.lm.vocab import EMPTY, EOS, PAD

METHODS = ("greedy", "sample", "beam")


@dataclass
class DecodeConfig:
    method: str = "greedy"
    top_k: int = 0  # sample: keep the k best (0: all)
    top_p: float = 1.0  # sample: nucleus mass
    temperature: float = 1.0
    beam_size: int = 4
    length_penalty: float = 1.0  # beam: rank finished text by score / len ** length_penalty
    max_new_tokens: Optional[int] = None  # default: up to the context limit
    min_frames: int = 1  # audio targets: frames before the segment may end (no empty synthesis)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got '{self.method}'")


@dataclass
class Output:
    """``text_ids`` (vocabulary ids) for text targets, ``codes`` ``(n_q, N)`` for audio."""

    text_ids: Optional[List[int]] = None
    codes: Optional[np.ndarray] = None
    score: float = 0.0
    hit_limit: bool = False  # stopped by max_new_tokens / the context, not by <eos>


class LMDecoder:
    """Generates targets for prompts built by :class:`SequenceBuilder`."""

    def __init__(self, model: ALMTokLM, builder: SequenceBuilder, config: DecodeConfig = DecodeConfig(),
                 generator: Optional[torch.Generator] = None):
        self.model = model.eval()
        self.builder = builder
        self.layout = builder.layout
        self.vocab = builder.vocab
        self.config = config
        self.generator = generator
        self.num_hit_limit = 0
        self.num_streams = self.layout.num_streams
        # masks of allowed ids, built once on the model's device (decoding stacks them every step)
        v = len(self.vocab)
        self.text_mask = torch.zeros(v, dtype=torch.bool, device=self.device)
        self.text_mask[self.vocab.text_offset: self.vocab.audio_offset] = True
        self.text_mask[EOS] = True
        self.code_masks = torch.zeros(self.vocab.n_q, v, dtype=torch.bool, device=self.device)
        for q in range(self.vocab.n_q):
            r = self.vocab.audio_range(q)
            self.code_masks[q, r.start: r.stop] = True
        self.empty_mask = torch.zeros(v, dtype=torch.bool, device=self.device)
        self.empty_mask[EMPTY] = True

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def __call__(self, prompts: List[np.ndarray], modality: str) -> List[Output]:
        """``prompts``: ``(L_i, S)`` arrays ending with the target's modality token."""
        if modality == "text" and self.config.method == "beam":
            return [self._beam(p) for p in prompts]
        if modality == "audio" and self.config.method == "beam":
            raise ValueError("beam search is for text targets; decode audio with --method greedy or sample")
        return self._batch(prompts, modality)

    # ------------------------------------------------------------------ helpers
    def _budget(self, prompt_len: int) -> int:
        room = self.model.max_len - prompt_len
        if self.config.max_new_tokens is not None:
            room = min(room, self.config.max_new_tokens)
        return max(room, 0)

    def _prefill(self, prompts: List[np.ndarray]):
        lmax = max(len(p) for p in prompts)
        seq = torch.full((len(prompts), lmax, self.num_streams), PAD, dtype=torch.long)
        valid = torch.zeros(len(prompts), lmax, dtype=torch.bool)
        for i, p in enumerate(prompts):
            seq[i, lmax - len(p):] = torch.as_tensor(p)
            valid[i, lmax - len(p):] = True
        seq, valid = seq.to(self.device), valid.to(self.device)
        cache = self.model.decoder.new_cache()
        logits = self.model.logits(seq, valid, cache)[:, -1]  # (B, S, V)
        return logits, cache, valid

    def _step(self, tokens: torch.Tensor, cache, past_valid):
        """``tokens`` ``(B, S)`` -> next logits ``(B, S, V)``, new ``past_valid``."""
        valid = torch.ones(tokens.shape[0], 1, dtype=torch.bool, device=self.device)
        logits = self.model.logits(tokens[:, None], valid, cache, past_valid)[:, -1]
        return logits, torch.cat([past_valid, valid], dim=1)

    def _choose(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``logits``/``allowed`` ``(N, V)`` -> ids ``(N,)`` (greedy or sampled)."""
        logits = logits.float().masked_fill(~allowed, float("-inf"))
        if self.config.method != "sample":
            return logits.argmax(-1)
        logits = logits / max(self.config.temperature, 1e-5)
        if self.config.top_k > 0:
            kth = logits.topk(min(self.config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.config.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            probs = sorted_logits.softmax(-1)
            drop = probs.cumsum(-1) - probs > self.config.top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.multinomial(probs.cpu(), 1, generator=self.generator).view(-1).to(logits.device)

    def _allowed(self, modality: str, k: int, end: Optional[int]) -> torch.Tensor:
        """``(S, V)`` ids allowed at step ``k`` of the target (``end``: frames, once known)."""
        s = self.num_streams
        if modality == "text":
            rows = [self.text_mask] + [self.empty_mask] * (s - 1)
        elif self.layout.layout == "flat":
            q = k % self.vocab.n_q
            m = self.code_masks[q].clone()
            m[EOS] = q == 0 and k >= self.config.min_frames * self.vocab.n_q
            rows = [m]
        else:
            rows = []
            for q in range(s):
                frame = k - q
                if end is None and q == 0:
                    m = self.code_masks[0].clone()
                    m[EMPTY] = k >= self.config.min_frames  # ends the segment
                elif frame >= 0 and (end is None or frame < end):
                    m = self.code_masks[q]
                else:
                    m = self.empty_mask
                rows.append(m)
        return torch.stack(rows)

    def _finish(self, rows: List[torch.Tensor], modality: str, hit_limit: bool, score: float = 0.0) -> Output:
        if hit_limit:
            self.num_hit_limit += 1
            logging.warning(f"decoding stopped at the length limit without <eos> ({self.num_hit_limit} so far); "
                            "raise --max_new_tokens or the model's max_len")
        arr = torch.stack(rows).cpu().numpy() if rows else np.zeros((0, self.num_streams), np.int64)
        if modality == "text":
            ids = [int(i) for i in arr[:, 0] if i != EOS]
            return Output(text_ids=ids, score=score, hit_limit=hit_limit)
        if self.layout.layout == "flat":
            arr = arr[arr[:, 0] != EOS]
        return Output(codes=self.layout.codes_from_rows(arr), score=score, hit_limit=hit_limit)

    # ------------------------------------------------------------------ greedy / sampling
    def _batch(self, prompts: List[np.ndarray], modality: str) -> List[Output]:
        logits, cache, past_valid = self._prefill(prompts)
        b = len(prompts)
        budgets = [self._budget(len(p)) for p in prompts]
        rows: List[List[torch.Tensor]] = [[] for _ in range(b)]
        ends: List[Optional[int]] = [None] * b  # delay layout: frames, once stream 0 ended
        done = [budget == 0 for budget in budgets]
        limit_hit = [budget == 0 for budget in budgets]
        k = 0
        while not all(done):
            allowed = torch.stack([self._allowed(modality, k, ends[i]) for i in range(b)])  # (B, S, V)
            tokens = self._choose(logits.reshape(b * self.num_streams, -1),
                                  allowed.view(b * self.num_streams, -1)).view(b, self.num_streams)
            for i in range(b):
                if done[i]:
                    continue
                tok = tokens[i]
                rows[i].append(tok)
                if modality == "audio" and self.layout.layout == "delay":
                    if ends[i] is None and tok[0] == EMPTY:
                        ends[i] = k
                    if ends[i] is not None and k >= ends[i] + self.num_streams - 2:
                        done[i] = True
                elif tok[0] == EOS:
                    done[i] = True
                if not done[i] and len(rows[i]) >= budgets[i]:
                    done[i] = limit_hit[i] = True
            if all(done):
                break
            logits, past_valid = self._step(tokens, cache, past_valid)
            k += 1
        return [self._finish(rows[i], modality, limit_hit[i]) for i in range(b)]

    # ------------------------------------------------------------------ beam search (text)
    def _beam(self, prompt: np.ndarray) -> Output:
        beam = self.config.beam_size
        logits, cache, past_valid = self._prefill([prompt])
        budget = self._budget(len(prompt))
        allowed = self._allowed("text", 0, None)[0]
        filler = torch.full((self.num_streams - 1,), EMPTY, dtype=torch.long, device=self.device)
        hyps: List[List[int]] = [[]]
        scores = torch.zeros(1, device=self.device)
        finished: List[Tuple[float, List[int]]] = []
        for k in range(budget):
            logp = logits[:, 0].float().log_softmax(-1).masked_fill(~allowed, float("-inf"))  # (n, V)
            total = (scores[:, None] + logp).view(-1)
            top = total.topk(min(2 * beam, int(torch.isfinite(total).sum())))
            new_hyps, new_scores, origin, tokens = [], [], [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                src, tok = divmod(flat, logp.shape[1])
                if tok == EOS:
                    n = len(hyps[src]) + 1
                    finished.append((score / n ** self.config.length_penalty, hyps[src]))
                else:
                    new_hyps.append(hyps[src] + [tok])
                    new_scores.append(score)
                    origin.append(src)
                    tokens.append(tok)
                if len(new_hyps) == beam:
                    break
            if len(finished) >= beam or not new_hyps:
                break
            hyps, scores = new_hyps, torch.tensor(new_scores, device=self.device)
            index = torch.tensor(origin, device=self.device)
            reorder_cache(cache, index)
            past_valid = past_valid.index_select(0, index)
            step = torch.tensor(tokens, device=self.device)[:, None]
            step = torch.cat([step, filler.expand(len(tokens), -1)], dim=1)
            logits, past_valid = self._step(step, cache, past_valid)
        hit_limit = not finished
        if hit_limit:
            finished = [(float(scores[0]) / max(len(hyps[0]), 1) ** self.config.length_penalty, hyps[0])]
        score, ids = max(finished, key=lambda f: f[0])
        rows = [torch.tensor([t] + [EMPTY] * (self.num_streams - 1)) for t in ids]
        return self._finish(rows, "text", hit_limit, score)

"""Task sequences over the shared vocabulary, in the flat or delay codec layout.

A sequence is an int array ``(L, S)``: ``L`` positions of ``S`` parallel streams.

* ``flat`` (``S = 1``): an audio segment of ``N`` frames is ``N * n_q`` positions, frame-major
  (``t0q0 t0q1 t0q2 t1q0 ...``), each code in its codebook's id range. Exact, ``n_q`` times
  longer.
* ``delay`` (``S = n_q``, MusicGen's pattern): position ``p`` of an audio segment holds, in
  stream ``q``, the code of frame ``p - q`` (``<empty>`` where ``p - q`` is outside
  ``0 .. N-1``); ``N + n_q - 1`` positions. The model embeds the sum of the streams and
  predicts all ``S`` of them at once. Text and special tokens use stream 0 and ``<empty>``
  elsewhere.

Every task is one template ``<task_X> <mod> condition <mod'> target <eos>``:

    asr      <task_asr>     <audio> codes <text>  pieces <eos>
    tts      <task_tts>     <text> pieces <audio> codes  <eos>
    caption  <task_caption> <audio> codes <text>  pieces <eos>

The prompt is everything up to and including the target's modality token (``prefix_len``);
only the target and ``<eos>`` are scored.
"""

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from espnet2_almtok.lm.vocab import EMPTY, EOS, Vocabulary

LAYOUTS = ("flat", "delay")
TASK_MODALITIES = {"asr": ("audio", "text"), "tts": ("text", "audio"), "caption": ("audio", "text")}
CONTEXT_POLICIES = ("error", "truncate")


class ContextError(ValueError):
    """A sequence does not fit the model's context (``max_len``)."""


class CodecLayout:
    """Codes ``(n_q, N)`` <-> stream rows ``(L, S)`` of vocabulary ids."""

    def __init__(self, vocab: Vocabulary, layout: str = "flat"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got '{layout}'")
        self.vocab = vocab
        self.layout = layout
        self.n_q = vocab.n_q
        self.num_streams = 1 if layout == "flat" else vocab.n_q

    def _ids(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] != self.n_q:
            raise ValueError(f"codes must be (n_q={self.n_q}, N), got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.vocab.codebook_size):
            raise ValueError(f"codes outside 0..{self.vocab.codebook_size - 1} (min {codes.min()}, "
                             f"max {codes.max()}): tokens of another codec or codebook size?")
        return codes + (self.vocab.audio_offset + np.arange(self.n_q) * self.vocab.codebook_size)[:, None]

    def audio_rows(self, codes: np.ndarray) -> np.ndarray:
        """``(n_q, N)`` codes -> ``(L, S)`` ids."""
        ids = self._ids(codes)
        n = ids.shape[1]
        if self.layout == "flat":
            return ids.T.reshape(-1, 1)
        rows = np.full((n + self.n_q - 1, self.n_q), EMPTY, dtype=np.int64)
        for q in range(self.n_q):
            rows[q: q + n, q] = ids[q]
        return rows

    def codes_from_rows(self, rows: np.ndarray) -> np.ndarray:
        """``(L, S)`` ids of one audio segment -> codes ``(n_q, N)`` (whole frames only)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, self.num_streams)
        if self.layout == "flat":
            n = rows.shape[0] // self.n_q
            ids = rows[: n * self.n_q, 0].reshape(n, self.n_q).T
        else:
            n = max(rows.shape[0] - self.n_q + 1, 0)
            ids = np.stack([rows[q: q + n, q] for q in range(self.n_q)]) if n else np.zeros((self.n_q, 0), np.int64)
        codes = ids - (self.vocab.audio_offset + np.arange(self.n_q) * self.vocab.codebook_size)[:, None]
        bad = (codes < 0) | (codes >= self.vocab.codebook_size)
        if bad.any():
            raise ValueError(f"audio segment holds {int(bad.sum())} ids outside their codebook's range")
        return codes

    def text_rows(self, ids: Sequence[int]) -> np.ndarray:
        """Stream-0 ids ``(L,)`` -> ``(L, S)`` with ``<empty>`` in streams 1..S-1."""
        rows = np.full((len(ids), self.num_streams), EMPTY, dtype=np.int64)
        rows[:, 0] = np.asarray(ids, dtype=np.int64)
        return rows


@dataclass
class Example:
    """One training/inference sequence. ``seq``: ``(L, S)``; ``prefix_len``: prompt length."""

    seq: np.ndarray
    prefix_len: int
    truncated: bool = False


class SequenceBuilder:
    """Builds task sequences and applies the context policy.

    Context policy when ``L > max_len``: ``error`` raises :class:`ContextError` naming the
    utterance; ``truncate`` shortens the condition to at most ``max_len - max_len // 4``
    positions (keeping its start) and cuts the target's tail, and counts it (logged every
    ``log_every`` truncations and available as :attr:`num_truncated`).
    """

    def __init__(self, layout: CodecLayout, max_len: int, context_policy: str = "error", log_every: int = 100):
        if context_policy not in CONTEXT_POLICIES:
            raise ValueError(f"context_policy must be one of {CONTEXT_POLICIES}, got '{context_policy}'")
        self.layout = layout
        self.vocab = layout.vocab
        self.max_len = int(max_len)
        self.context_policy = context_policy
        self.log_every = log_every
        self.num_truncated = 0

    def segment(self, modality: str, text_ids: Optional[Sequence[int]] = None,
                codes: Optional[np.ndarray] = None) -> np.ndarray:
        if modality == "text":
            return self.layout.text_rows(self.vocab.text_ids(text_ids))
        return self.layout.audio_rows(codes)

    def prompt(self, task: str, condition: np.ndarray) -> np.ndarray:
        """``<task> <mod> condition <mod'>`` as ``(L, S)``."""
        src, tgt = TASK_MODALITIES[task]
        v = self.vocab
        head = self.layout.text_rows([v.task_id(task), v.modality_id(src)])
        tail = self.layout.text_rows([v.modality_id(tgt)])
        return np.concatenate([head, condition, tail])

    def build(self, key: str, task: str, text_ids: Sequence[int], codes: np.ndarray,
              with_target: bool = True) -> Example:
        """The sequence for ``task`` of one utterance (prompt only when ``with_target=False``)."""
        src, tgt = TASK_MODALITIES[task]
        cond = self.segment(src, text_ids, codes)
        prompt = self.prompt(task, cond)
        if not with_target:
            return self.fit(key, Example(prompt, len(prompt)), room=self.max_len // 4)
        target = np.concatenate([self.segment(tgt, text_ids, codes), self.layout.text_rows([EOS])])
        return self.fit(key, Example(np.concatenate([prompt, target]), len(prompt)))

    def fit(self, key: str, ex: Example, room: int = 1) -> Example:
        """Apply the context policy; ``room``: positions that must stay free after the sequence."""
        limit = self.max_len - (room if len(ex.seq) == ex.prefix_len else 0)
        if len(ex.seq) <= limit:
            return ex
        if self.context_policy == "error":
            raise ContextError(
                f"{key}: {len(ex.seq)} positions (prompt {ex.prefix_len}) exceed the context max_len="
                f"{self.max_len}{' minus room to generate' if room > 1 else ''}. Raise the model's max_len, "
                "shorten or segment long utterances (lm_data build lists them in <data dir>/too_long), "
                "or use context_policy=truncate")
        max_prompt = self.max_len - max(self.max_len // 4, room)
        seq, prefix = ex.seq, ex.prefix_len
        if prefix > max_prompt:  # drop condition positions before the target's modality token
            cut = prefix - max_prompt
            seq = np.concatenate([seq[: prefix - 1 - cut], seq[prefix - 1:]])
            prefix = max_prompt
        seq = seq[: limit]
        self.num_truncated += 1
        if self.num_truncated == 1 or self.num_truncated % self.log_every == 0:
            logging.warning(f"context policy 'truncate': {self.num_truncated} sequence(s) truncated to "
                            f"max_len={self.max_len} so far (latest: {key}, {len(ex.seq)} positions)")
        return Example(seq, prefix, truncated=True)

    def length(self, task: str, n_text: int, n_frames: int) -> int:
        """Sequence length (positions) for ``n_text`` pieces and ``n_frames`` audio frames."""
        audio = n_frames * self.layout.n_q if self.layout.layout == "flat" else n_frames + self.layout.n_q - 1
        return 4 + n_text + audio

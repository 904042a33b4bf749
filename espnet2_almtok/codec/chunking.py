"""Long audio in training-sized windows: which query groups each Transformer pass attends and keeps.

A clip of ``N`` tokens (query groups of ``w`` frames) longer than the context of ``K`` groups is
covered by overlapping windows of exactly ``K`` groups. Window boundaries are query-group
boundaries (multiples of ``w`` frames), so every window interleaves its frames with queries as a
training crop does, and its positions start at 0 as in training. Each window keeps the tokens at
least ``overlap`` groups away from its edges (except at the clip's own ends); the kept ranges
tile ``[0, N)``::

    groups   0 ............................................................. N
    chunk 0  [attend ........................)            keep [0, K - o)
    chunk 1              [attend ........................) keep [K - o, 2K - 3o)
    ...
    last                          [attend ..............)  keep [.., N)   (starts at N - K)

Clips of at most ``K`` tokens are one window: the path of a short clip is unchanged.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

DEFAULT_CONTEXT_S = 3.0  # when a config has no training crop (crop_length)
DEFAULT_OVERLAP_FRACTION = 1 / 6  # of the context, on each side of a window


@dataclass(frozen=True)
class Chunk:
    """Groups ``[start, stop)`` are attended; the tokens ``[keep_start, keep_stop)`` are kept."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


@dataclass(frozen=True)
class ChunkingConfig:
    """How long audio is cut for the Transformers.

    Args:
        context_s: seconds one Transformer pass attends (default: the training crop).
        overlap_s: seconds of extra context on each side of the kept tokens (default: a sixth
            of the context).
        chunk_batch: windows run through a Transformer together (memory ~ ``chunk_batch x
            context``; more is faster on a GPU).
        crossfade: on the decoder side, neighbouring windows' frames are blended over this
            share of the overlap (raised cosine), so there is no step between windows.
    """

    context_s: float = DEFAULT_CONTEXT_S
    overlap_s: Optional[float] = None
    chunk_batch: int = 8
    crossfade: float = 1.0

    def __post_init__(self):
        if not self.context_s > 0:
            raise ValueError(f"context must be a positive number of seconds, got {self.context_s!r}")
        if self.overlap_s is not None and self.overlap_s < 0:
            raise ValueError(f"overlap must be >= 0 seconds, got {self.overlap_s!r}")
        if self.chunk_batch < 1:
            raise ValueError(f"chunk_batch must be >= 1, got {self.chunk_batch!r}")
        if not 0.0 <= self.crossfade <= 1.0:
            raise ValueError(f"crossfade is a share of the overlap in [0, 1], got {self.crossfade!r}")

    def groups(self, frame_rate: float, window: int) -> Tuple[int, int]:
        """-> (context, overlap) in query groups of ``window`` frames.

        The context is rounded up to whole groups (a training crop is padded to whole tokens
        too), the overlap up to at least one group, and the context grows, if it must, to
        ``2 * overlap + 1`` groups so that every window keeps a token.
        """
        overlap_s = self.context_s * DEFAULT_OVERLAP_FRACTION if self.overlap_s is None else self.overlap_s
        context = math.ceil(round(self.context_s * frame_rate, 6) / window)
        overlap = max(1, math.ceil(round(overlap_s * frame_rate, 6) / window))
        return max(context, 2 * overlap + 1), overlap


def plan_chunks(n_tokens: int, context: int, overlap: int) -> List[Chunk]:
    """Windows covering ``n_tokens`` query groups; see the module docstring.

    Every window attends exactly ``context`` groups when ``n_tokens > context``; a kept token has
    at least ``overlap`` attended groups on each side unless it is within ``overlap`` of the
    clip's ends.
    """
    if n_tokens < 1:
        raise ValueError(f"nothing to chunk: {n_tokens} tokens")
    if context < 2 * overlap + 1:
        raise ValueError(f"context {context} groups leaves no kept token with overlap {overlap} on each side")
    if n_tokens <= context:
        return [Chunk(0, n_tokens, 0, n_tokens)]
    chunks, keep_start = [], 0
    while keep_start < n_tokens:
        start = 0 if keep_start == 0 else keep_start - overlap
        stop = start + context
        if stop >= n_tokens:
            chunks.append(Chunk(n_tokens - context, n_tokens, keep_start, n_tokens))
            break
        chunks.append(Chunk(start, stop, keep_start, stop - overlap))
        keep_start = stop - overlap
    return chunks

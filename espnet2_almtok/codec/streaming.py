"""Encode and decode one long clip with cost linear in its length and memory bounded by the context.

Encoder: the waveform is read in blocks (from a tensor or a file, :class:`SampleSource`) and
patchified block by block with a margin of real samples on each side, so the frames equal those
of one pass over the whole clip (up to float rounding); the Transformer encoder then runs over
the windows of :func:`~espnet2_almtok.codec.chunking.plan_chunks` and each window's kept queries
are quantized. Decoder: each window of tokens is expanded and decoded by the Transformer; the
windows' frames are blended over the overlap (raised cosine) into one frame sequence, which is
de-patchified block by block with frame margins and yielded as waveform blocks.

Only ``O(context)`` frames and samples are alive at any time (plus the codes, 3 integers per
token). Clips within one context take the generator's ordinary path, unchanged.
"""

import math
from typing import Iterator, List, Optional, Protocol

import torch
from torch import nn

from espnet2_almtok.codec.chunking import Chunk, ChunkingConfig, plan_chunks


class SampleSource(Protocol):
    """Mono audio at the model rate, read by sample range (implementations:
    :mod:`espnet2_almtok.codec.sources`)."""

    num_samples: int

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples ``[start, stop)`` as float32 ``(stop - start,)``; zeros past ``num_samples``."""


# ------------------------------------------------------------------------------ receptive fields
def conv_layers(module: nn.Module) -> List[nn.Module]:
    """The ``Conv1d``/``ConvTranspose1d`` layers of ``module`` in forward order (depth first)."""
    return [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]


def downsampling_margin_frames(module: nn.Module, hop_length: int) -> int:
    """Frames of real context that make a block's frames equal to a whole-clip pass of a strided
    conv stack (waveform -> frames): its receptive field in frames, rounded up, plus one."""
    rf, jump = 1, 1
    for conv in conv_layers(module):
        rf += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return math.ceil(rf / hop_length) + 1


def upsampling_margin_frames(module: nn.Module) -> int:
    """Input frames of context that make a block's samples equal to a whole-clip pass of an
    upsampling conv stack (frames -> waveform): the receptive field in input frames plus one."""
    extent, per_frame = 0.0, 1
    for conv in conv_layers(module):
        k, s = conv.kernel_size[0], conv.stride[0]
        if isinstance(conv, nn.ConvTranspose1d):
            extent += math.ceil(k / s) / per_frame
            per_frame *= s
        else:
            extent += (k - 1) * conv.dilation[0] / per_frame
    return math.ceil(extent) + 1


# ------------------------------------------------------------------------------ frame buffers
class FrameWindow:
    """Random access to a frame sequence produced block by block: ``get(f0, f1)`` ``(C, f1 - f0)``
    pulls blocks ``(C, b)`` from the iterator as needed; ``release(f0)`` drops frames before ``f0``."""

    def __init__(self, blocks: Optional[Iterator[torch.Tensor]] = None):
        self.blocks = blocks if blocks is not None else iter(())
        self.buf: Optional[torch.Tensor] = None
        self.offset = 0
        self.peak_frames = 0

    def append(self, block: torch.Tensor) -> None:
        """Add the next frames ``(C, b)`` (for a window fed by hand instead of an iterator)."""
        self.buf = block if self.buf is None else torch.cat([self.buf, block], 1)
        self.peak_frames = max(self.peak_frames, self.buf.shape[1])  # what bounded memory means here

    def get(self, f0: int, f1: int) -> torch.Tensor:
        if f0 < self.offset:
            raise IndexError(f"frames before {self.offset} were released (asked for {f0})")
        while self.buf is None or self.offset + self.buf.shape[1] < f1:
            block = next(self.blocks, None)
            if block is None:
                raise IndexError(f"frames up to {f1} asked for; the sequence ended earlier")
            self.append(block)
        return self.buf[:, f0 - self.offset: f1 - self.offset]

    def release(self, f0: int) -> None:
        if self.buf is not None and f0 > self.offset:
            self.buf = self.buf[:, f0 - self.offset:]
            self.offset = f0


def patchify_blocks(gen, source: SampleSource, n_frames: int, block_frames: int,
                    device: torch.device) -> Iterator[torch.Tensor]:
    """Frames ``(C, b)`` of ``[0, n_frames)`` in blocks, equal to ``gen.patchify_frames`` of the
    whole clip: each block is patchified with ``gen.patchify_margin`` frames of real samples on
    each side (none past the clip's padded end, which the whole-clip pass also sees as its edge)."""
    hop, margin = gen.hop_length, gen.patchify_margin
    total = (n_frames + gen.pad_margin_frames) * hop  # what the whole-clip pass patchifies
    for f0 in range(0, n_frames, block_frames):
        f1 = min(n_frames, f0 + block_frames)
        a, b = max(0, (f0 - margin) * hop), min(total, (f1 + margin) * hop)
        x = source.read(a, b).to(device=device, dtype=torch.float32).view(1, 1, -1)
        yield gen.patchify(x)[0, :, f0 - a // hop: f1 - a // hop]


# ------------------------------------------------------------------------------ encoder
@torch.no_grad()
def encode_long(gen, source: SampleSource, window: int, chunking: ChunkingConfig,
                n_q: Optional[int] = None) -> torch.Tensor:
    """One clip -> codes ``(n_q, N)``, ``N = ceil(num_samples / (hop * w))``; Transformer
    windows of ``chunking``'s context; a clip within one context takes ``gen.encode``."""
    unit = gen.hop_length * window
    n_tokens = math.ceil(source.num_samples / unit)
    if n_tokens < 1:
        raise ValueError("the clip is empty (0 samples)")
    context, overlap = chunking.groups(gen.frame_rate, window)
    device = gen.query_token.device
    if n_tokens <= context:
        wav = source.read(0, source.num_samples).to(device=device, dtype=torch.float32)
        return gen.encode(wav.view(1, 1, -1), window, n_q=n_q)[0]
    chunks = plan_chunks(n_tokens, context, overlap)
    frames = FrameWindow(patchify_blocks(gen, source, n_tokens * window, context * window, device))
    codes = []
    for i in range(0, len(chunks), chunking.chunk_batch):
        group = chunks[i: i + chunking.chunk_batch]
        x = torch.stack([frames.get(c.start * window, c.stop * window).t() for c in group])  # (b, K*w, C)
        queries, _ = gen.encode_frames(x, window)  # (b, K, C)
        kept = torch.cat([queries[j, c.keep_start - c.start: c.keep_stop - c.start] for j, c in enumerate(group)])
        codes.append(gen.quantize(kept.unsqueeze(0), n_q)[0])  # (n_q, kept)
        if i + chunking.chunk_batch < len(chunks):
            frames.release(chunks[i + chunking.chunk_batch].start * window)
    return torch.cat(codes, dim=-1)


# ------------------------------------------------------------------------------ decoder
def crossfade_half_width(chunking: ChunkingConfig, context: int, overlap: int, window: int) -> int:
    """Frames on each side of a window boundary over which neighbouring windows are blended:
    ``crossfade`` x half the overlap, and never more than half a window's kept span."""
    return min(round(chunking.crossfade * overlap * window / 2), (context - 2 * overlap) * window // 2)


def chunk_weights(chunks: List[Chunk], index: int, half: int, window: int, n_frames: int):
    """-> (first frame, weights ``(f,)``) of window ``index``'s share of the blended frames: 1
    inside its kept span, raised-cosine ramps over ``[b - half, b + half)`` at each boundary
    ``b`` with a neighbour (the neighbour gets one minus the ramp), so shares sum to 1."""
    c = chunks[index]
    first = c.keep_start * window - (half if index > 0 else 0)
    last = c.keep_stop * window + (half if index < len(chunks) - 1 else 0)
    weights = torch.ones(min(last, n_frames) - first)
    if half:
        t = torch.arange(2 * half, dtype=torch.float32)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (t + 0.5) / (2 * half))  # 0 -> 1
        if index > 0:
            weights[: 2 * half] = ramp
        if index < len(chunks) - 1:
            weights[-2 * half:] *= 1 - ramp
    return first, weights


class FrameStitcher:
    """Sums weighted window frames into one sequence ``(C, T)`` and hands out the finished part."""

    def __init__(self):
        self.buf: Optional[torch.Tensor] = None
        self.offset = 0

    def add(self, first: int, frames: torch.Tensor) -> None:
        end = first + frames.shape[1]
        if self.buf is None:
            self.buf = frames.new_zeros(frames.shape[0], 0)
        grow = end - self.offset - self.buf.shape[1]
        if grow > 0:
            self.buf = torch.cat([self.buf, self.buf.new_zeros(self.buf.shape[0], grow)], 1)
        self.buf[:, first - self.offset: end - self.offset] += frames

    def pop(self, upto: int) -> torch.Tensor:
        out = self.buf[:, : upto - self.offset]
        self.buf = self.buf[:, upto - self.offset:]
        self.offset = upto
        return out


class DePatchifyStream:
    """Finished frames in, waveform blocks out: ``push(frames (C, f))`` yields ``(samples,)``
    blocks equal to ``gen.depatchify`` of the whole sequence of ``n_frames`` frames."""

    def __init__(self, gen, n_frames: int, block_frames: int):
        self.gen, self.n_frames, self.block = gen, n_frames, block_frames
        self.margin = gen.depatchify_margin
        self.frames = FrameWindow()
        self.have = 0  # frames received
        self.done = 0  # frames rendered

    def push(self, frames: torch.Tensor) -> Iterator[torch.Tensor]:
        self.frames.append(frames)
        self.have += frames.shape[1]
        while self.done < self.n_frames:
            g1 = min(self.n_frames, self.done + self.block)
            if self.have < self.n_frames and g1 + self.margin > self.have:
                return
            yield self._render(self.done, g1)
            self.done = g1
            self.frames.release(max(0, self.done - self.margin))

    def _render(self, g0: int, g1: int) -> torch.Tensor:
        hop = self.gen.hop_length
        a, b = max(0, g0 - self.margin), min(self.n_frames, g1 + self.margin)
        wav = self.gen.depatchify.net(self.frames.get(a, b).unsqueeze(0))  # (1, 1, (b - a) * hop)
        return wav[0, 0, (g0 - a) * hop: (g1 - a) * hop].float()


@torch.no_grad()
def decode_long(gen, codes: torch.Tensor, window: int, chunking: ChunkingConfig) -> Iterator[torch.Tensor]:
    """Codes ``(n_q', N)`` of one clip -> waveform blocks ``(samples,)`` totalling
    ``N * w * hop_length`` samples; a clip within one context takes ``gen.decode``."""
    n_tokens = codes.shape[-1]
    context, overlap = chunking.groups(gen.frame_rate, window)
    if n_tokens <= context:
        yield gen.decode(codes.unsqueeze(0), window)[0, 0].float()
        return
    chunks = plan_chunks(n_tokens, context, overlap)
    n_frames = n_tokens * window
    half = crossfade_half_width(chunking, context, overlap, window)
    stitcher, out = FrameStitcher(), DePatchifyStream(gen, n_frames, context * window)
    for i in range(0, len(chunks), chunking.chunk_batch):
        group = chunks[i: i + chunking.chunk_batch]
        latents = gen.quantizer.decode(torch.stack([codes[:, c.start: c.stop] for c in group]))  # (b, K, C)
        frames = gen.decode_frames(latents, window)  # (b, K*w, C)
        for j, c in enumerate(group):
            k = i + j
            first, weights = chunk_weights(chunks, k, half, window, n_frames)
            local = frames[j, first - c.start * window: first - c.start * window + weights.numel()]
            stitcher.add(first, (local.float() * weights.to(local.device).unsqueeze(1)).t())
            final = n_frames if k == len(chunks) - 1 else c.keep_stop * window - half
            yield from out.push(stitcher.pop(final))

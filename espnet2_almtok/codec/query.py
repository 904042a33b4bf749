"""Query-token interleaving (encoder) and mask-token expansion (decoder) for window ``w``.

Encoder side: frames ``(B, T, C)`` with ``T = N * w`` become ``(B, N * (w + 1), C)``: after
every ``w`` frames one copy of a learnable query token. Only the query positions are kept after
the Transformer, so the token rate is ``frame_rate / w``.

Decoder side: quantized queries ``(B, N, C)`` become ``(B, N * (w + 1), C)``: each query
followed by ``w`` copies of a learnable mask token; after the Transformer the mask positions
are the ``N * w`` frames handed to DePatchify.

``shortcut`` (ours, off in the paper's layout) adds a parameter-free path between a query slot
and its own ``w`` frames: the encoder's query input becomes the query token plus the mean of
its frames, the decoder's mask inputs the mask token plus their quantized query. Without it
every bit between a frame and its query must be routed by attention, which starts out spread
over the whole clip.
"""

import torch


def interleave_queries(frames: torch.Tensor, query: torch.Tensor, window: int,
                       shortcut: bool = False) -> torch.Tensor:
    """``(B, N*w, C)``, query ``(C,)`` -> ``(B, N*(w+1), C)`` with the query at every ``w+1``-th
    slot (with ``shortcut``, plus the mean of the ``w`` frames before it)."""
    b, t, c = frames.shape
    if t % window:
        raise ValueError(f"frame count {t} is not a multiple of the window {window}; pad the input")
    groups = frames.reshape(b, t // window, window, c)
    q = query.reshape(1, 1, 1, c).expand(b, t // window, 1, c)
    if shortcut:
        q = q + groups.mean(dim=2, keepdim=True)
    return torch.cat([groups, q], dim=2).reshape(b, -1, c)


def retrieve_queries(seq: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, N*(w+1), C)`` -> query outputs ``(B, N, C)``."""
    b, t, c = seq.shape
    return seq.reshape(b, t // (window + 1), window + 1, c)[:, :, -1]


def retrieve_frames(seq: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, N*(w+1), C)`` -> frame outputs ``(B, N*w, C)`` (encoder layout: query last)."""
    b, t, c = seq.shape
    return seq.reshape(b, t // (window + 1), window + 1, c)[:, :, :-1].reshape(b, -1, c)


def expand_with_masks(queries: torch.Tensor, mask_token: torch.Tensor, window: int,
                      shortcut: bool = False) -> torch.Tensor:
    """``(B, N, C)``, mask ``(C,)`` -> ``(B, N*(w+1), C)``: each query followed by ``w`` masks
    (with ``shortcut``, each mask plus its query)."""
    b, n, c = queries.shape
    masks = mask_token.reshape(1, 1, 1, c).expand(b, n, window, c)
    if shortcut:
        masks = masks + queries.unsqueeze(2)
    return torch.cat([queries.unsqueeze(2), masks], dim=2).reshape(b, -1, c)


def retrieve_mask_frames(seq: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, N*(w+1), C)`` -> mask-token outputs ``(B, N*w, C)`` (decoder layout: query first)."""
    b, t, c = seq.shape
    return seq.reshape(b, t // (window + 1), window + 1, c)[:, :, 1:].reshape(b, -1, c)


def interleaved_padding_mask(frame_lengths: torch.Tensor, n_queries: int, window: int) -> torch.Tensor:
    """Key-padding mask ``(B, N*(w+1))`` (True = padding) for clips of ``frame_lengths`` frames.

    A query group is valid when any of its frames is; the frames of a clip are padded to a
    multiple of ``w`` before interleaving, so a valid group is valid as a whole.
    """
    groups = (frame_lengths + window - 1) // window  # (B,)
    idx = torch.arange(n_queries, device=frame_lengths.device)
    group_pad = idx.unsqueeze(0) >= groups.unsqueeze(1)  # (B, N)
    return group_pad.unsqueeze(2).expand(-1, -1, window + 1).reshape(group_pad.shape[0], -1)

"""The ALMTokenizer generator: Patchify -> query Transformer encoder -> RVQ -> decoder.

See ``espnet2_almtok/codec/__init__.py`` for the shape conventions.
"""

import numbers
from typing import Dict, Optional, Sequence, Union

import torch
import torchaudio
from torch import nn

from espnet2_almtok.codec.chunking import ChunkingConfig
from espnet2_almtok.codec.patchify import DePatchify, Patchify
from espnet2_almtok.codec.quantizer import ResidualVQ
from espnet2_almtok.codec.query import (
    expand_with_masks,
    interleave_queries,
    interleaved_padding_mask,
    retrieve_frames,
    retrieve_mask_frames,
    retrieve_queries,
)
from espnet2_almtok.codec.semantic_losses import ARHead, MAEHead, random_frame_mask
from espnet2_almtok.codec.sources import TensorSource
from espnet2_almtok.codec.streaming import (decode_long, downsampling_margin_frames, encode_long,
                                            upsampling_margin_frames)
from espnet2_almtok.codec.transformer import TransformerStack

# Parameters and buffers that only training uses (the MAE and AR objectives).
MAE_PASSES = ("shared", "separate")
SHORTCUT_SIDES = ("encoder", "decoder")  # query_shortcut on one side only (a diagnosis: which side stalls)
TRAINING_ONLY_PREFIXES = ("mae_mask_token", "mae_target.", "mae_head.", "ar_head.")


class LogMelFrames(nn.Module):
    """Waveform ``(B, 1, T_wav)`` -> log-mel ``(B, T, n_mels)`` at the patchify frame rate (MAE target)."""

    def __init__(self, sample_rate: int, hop_length: int, n_mels: int = 80):
        super().__init__()
        n_fft = 1 << (2 * hop_length - 1).bit_length()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=1.0, center=True)
        self.hop_length = hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav.shape[-1] // self.hop_length
        # zeros past the end (not the STFT's reflection of the last samples), so the target of
        # a frame does not depend on how much padding follows the clip
        wav = nn.functional.pad(wav.squeeze(1).float(), (0, self.mel.n_fft // 2))
        with torch.autocast(wav.device.type, enabled=False):
            mel = self.mel(wav)[..., :frames]
        return torch.log(mel.clamp(min=1e-5)).transpose(1, 2)


class ALMTokenizerGenerator(nn.Module):
    """Encoder, quantizer and decoder of ALMTokenizer.

    Args:
        sample_rate: audio rate in Hz.
        hidden_dim: Transformer width ``C`` (also the patchify output width).
        patch_channels / patch_strides: Patchify stem width and strides (``prod = hop_length``).
        frame_norm: how the patchified frames are normalised (:class:`Patchify`): ``"time"``
            (each channel over time, running statistics: ours, what gets the query layout off
            the average-spectrum plateau), ``"layer"`` / ``true`` (a LayerNorm per frame),
            ``"none"`` / ``false``.
        encoder_layers / decoder_layers / num_heads / ff_mult / dropout: the Transformers.
        attention_bias: the encoder/decoder Transformers' ``attention_bias`` (``"none"``, the
            paper's plain bidirectional attention; ``"alibi"``, a distance penalty that makes
            each query token start from its own frames: see :class:`TransformerStack`).
        query_shortcut: add the parameter-free path between each query and its own ``w``
            frames (:mod:`espnet2_almtok.codec.query`): encoder query input = query token +
            mean of its frames, decoder mask inputs = mask token + their quantized query.
            Ours (the paper routes everything through attention); off by default.
            ``"encoder"`` / ``"decoder"``: that side's path only (to tell which side stalls).
        encoder_local_layers / decoder_local_layers: the first layers of the encoder / decoder
            Transformer attend only within each window group (the ``w`` frames and their query;
            a query and its ``w`` mask slots); the layers above attend over the whole clip as
            in the paper. An attention mask, no parameters: the layout stays the paper's.
            Ours; 0 (off) is the paper's plain bidirectional attention.
        windows: the query windows ``w`` seen in training (one is sampled per batch).
        n_q / codebook_size / codebook_dim: the residual VQ (``codebook_dim`` = SSL width).
        codebook_init: per-layer ``.npy`` centroid files (semantic priors), or ``None``.
        codebook_frozen: per-layer (or one) freeze switch.
        codebook_input_norm: standardise the projected queries to the first codebook's
            per-dimension statistics before the lookup (``CodebookSpaceNorm``; keep it on: off,
            the codes collapse onto one entry early in training).
        mae_mask_ratio: fraction of encoder-input frames masked for the MAE loss in training.
        mae_layers / n_mels: MAE head depth and its log-mel target width.
        mae_pass: where the MAE masking happens. ``"shared"`` (the paper's layout, default):
            the one encoder pass sees the masked input, and its queries are also the ones that
            are quantized and decoded. ``"separate"`` (ours): the tokens and the resynthesis
            come from a clean pass, the MAE loss from a second, masked pass of the same encoder
            (twice the encoder's cost in training): the decoder learns from the clean encodings
            it gets at inference, and the encoder still learns to fill masked frames.
        ar_dim / ar_layers: the AR head's causal Transformer.
        pad_margin_frames: zero frames appended when encoding, so the conv front end sees the
            same context for a clip whether it is encoded alone or padded in a batch.
        inference_only: build without the training-only parts (MAE mask token, MAE target and
            head, AR head: :data:`TRAINING_ONLY_PREFIXES`); encode/decode work, training does not.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        hidden_dim: int = 512,
        patch_channels: int = 32,
        patch_strides: Sequence[int] = (2, 4, 5, 8),
        frame_norm: Union[str, bool] = "layer",
        encoder_layers: int = 8,
        decoder_layers: int = 8,
        num_heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.0,
        attention_bias: str = "none",
        query_shortcut: Union[bool, str] = False,
        encoder_local_layers: int = 0,
        decoder_local_layers: int = 0,
        windows: Sequence[int] = (2, 3, 4, 5, 6, 7, 8, 9, 10),
        n_q: int = 3,
        codebook_size: int = 2048,
        codebook_dim: int = 768,
        codebook_init: Optional[Sequence[Optional[str]]] = None,
        codebook_frozen: Union[bool, Sequence[bool]] = True,
        codebook_input_norm: bool = True,
        mae_mask_ratio: float = 0.4,
        mae_layers: int = 1,
        mae_pass: str = "shared",
        n_mels: int = 80,
        ar_dim: int = 256,
        ar_layers: int = 2,
        pad_margin_frames: int = 4,
        inference_only: bool = False,
    ):
        super().__init__()
        windows = sorted(set(int(w) for w in windows))
        if not windows or windows[0] < 1:
            raise ValueError(f"windows must be positive integers, got {windows}")
        self.sample_rate = sample_rate
        self.windows = windows
        self.n_q = n_q
        self.codebook_size = codebook_size
        self.mae_mask_ratio = mae_mask_ratio
        self.pad_margin_frames = pad_margin_frames
        self.inference_only = inference_only
        if not (isinstance(query_shortcut, bool) or query_shortcut in SHORTCUT_SIDES):
            raise ValueError(f"query_shortcut must be true or false (or one side: {' or '.join(SHORTCUT_SIDES)}), "
                             f"got {query_shortcut!r}")
        self.query_shortcut = query_shortcut
        if mae_pass not in MAE_PASSES:
            raise ValueError(f"mae_pass must be one of {MAE_PASSES}, got {mae_pass!r}")
        self.mae_pass = mae_pass

        self.patchify = Patchify(hidden_dim, patch_channels, patch_strides, norm=frame_norm)
        self.hop_length = self.patchify.hop_length
        self.query_token = nn.Parameter(torch.randn(hidden_dim) * 0.02)
        mae_mask_token = torch.randn(hidden_dim) * 0.02  # drawn either way: the same weights follow
        if not inference_only:
            self.mae_mask_token = nn.Parameter(mae_mask_token)
        self.encoder = TransformerStack(hidden_dim, encoder_layers, num_heads, ff_mult, dropout,
                                        attention_bias=attention_bias, local_layers=encoder_local_layers)
        self.quantizer = ResidualVQ(hidden_dim, codebook_dim, codebook_size, n_q,
                                    codebook_init, codebook_frozen, codebook_input_norm)
        self.decoder_mask_token = nn.Parameter(torch.randn(hidden_dim) * 0.02)
        self.decoder = TransformerStack(hidden_dim, decoder_layers, num_heads, ff_mult, dropout,
                                        attention_bias=attention_bias, local_layers=decoder_local_layers)
        self.depatchify = DePatchify(hidden_dim, patch_channels, tuple(reversed(patch_strides)))
        # frames of context that make blockwise conv passes equal whole-clip ones (long audio)
        self.patchify_margin = downsampling_margin_frames(self.patchify, self.hop_length)
        self.depatchify_margin = upsampling_margin_frames(self.depatchify)
        if not inference_only:
            self.mae_target = LogMelFrames(sample_rate, self.hop_length, n_mels)
            self.mae_head = MAEHead(hidden_dim, n_mels, mae_layers, num_heads)
            self.ar_head = ARHead(codebook_dim, n_q, ar_dim, ar_layers, max(1, ar_dim // 64))

    # ----------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def check_window(self, window: int) -> int:
        if isinstance(window, bool) or not isinstance(window, numbers.Real) or not float(window).is_integer():
            raise ValueError(f"window must be an integer (one of {self.windows}), got {window!r}")
        if int(window) not in self.windows:
            raise ValueError(f"window w={window} was not trained; this model supports w in {self.windows}")
        return int(window)

    def pad_to_window(self, wav: torch.Tensor, window: int) -> torch.Tensor:
        """Right-pad ``(B, 1, T_wav)`` with zeros to a multiple of ``hop_length * window``."""
        unit = self.hop_length * window
        pad = (-wav.shape[-1]) % unit
        return nn.functional.pad(wav, (0, pad)) if pad else wav

    # ----------------------------------------------------------------------------------------
    def valid_counts(self, lengths: torch.Tensor, window: int):
        """Samples ``(B,)`` -> (frames holding real samples ``(B,)``, real tokens ``(B,)``)."""
        frames = (lengths + self.hop_length - 1) // self.hop_length
        return frames, (frames + window - 1) // window

    def patchify_frames(self, wav: torch.Tensor, n_frames: int,
                        frame_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, 1, T_wav)`` -> frames ``(B, n_frames, C)``. A zero margin of
        ``pad_margin_frames`` lets the last frames see zeros past the clip, as they would
        with padding after it: a clip's frames do not depend on the padding in its batch.
        ``frame_lengths`` ``(B,)``: each clip's real frames (what ``frame_norm: time`` learns
        its statistics from in training)."""
        margin = self.pad_margin_frames * self.hop_length
        padded = nn.functional.pad(wav, (0, margin)) if margin else wav
        return self.patchify(padded, frame_lengths)[..., :n_frames].transpose(1, 2)

    def encode_frames(self, frames: torch.Tensor, window: int,
                      frame_lengths: Optional[torch.Tensor] = None):
        """Patchified frames ``(B, T, C)`` (``T`` a multiple of ``window``) -> query outputs
        ``(B, N, C)`` and encoder frame outputs ``(B, T, C)``.

        ``frame_lengths`` ``(B,)`` marks the valid frames of each clip (attention padding).
        """
        seq = interleave_queries(frames, self.query_token, window, self.query_shortcut in (True, "encoder"))
        pad_mask = None
        if frame_lengths is not None:
            pad_mask = interleaved_padding_mask(frame_lengths, frames.shape[1] // window, window)
        seq = self.encoder(seq, padding_mask=pad_mask, group_size=window + 1)
        return retrieve_queries(seq, window), retrieve_frames(seq, window)

    def decode_frames(self, quantized: torch.Tensor, window: int,
                      token_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Quantized queries ``(B, N, C)`` -> decoder frame outputs ``(B, N * w, C)`` (the mask
        slots); ``token_lengths`` ``(B,)`` keeps padded tokens out of attention."""
        seq = expand_with_masks(quantized, self.decoder_mask_token, window, self.query_shortcut in (True, "decoder"))
        pad_mask = None
        if token_lengths is not None:
            pad_mask = interleaved_padding_mask(token_lengths * window, quantized.shape[1], window)
        return retrieve_mask_frames(self.decoder(seq, padding_mask=pad_mask, group_size=window + 1), window)

    def decode_latents(self, quantized: torch.Tensor, window: int,
                       token_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Quantized queries ``(B, N, C)`` -> waveform ``(B, 1, N * w * hop_length)``;
        ``token_lengths`` as in :meth:`decode_frames`."""
        return self.depatchify(self.decode_frames(quantized, window, token_lengths).transpose(1, 2))

    # ----------------------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor, window: int, use_mae: bool = False, use_ar: bool = False,
                lengths: Optional[torch.Tensor] = None, mae_mask: Optional[torch.Tensor] = None,
                mae_generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """Training pass. ``wav`` ``(B, 1, T_wav)`` -> dict with ``resyn`` ``(B, 1, T_wav)``,
        ``codes`` ``(B, n_q, N)`` and the losses ``commit``, ``codebook``, ``mae``, ``ar``.

        ``lengths`` ``(B,)`` are the clips' real samples (default: all ``T_wav``). Padding --
        the zeros that round a clip up to whole tokens and those after a shorter clip in the
        batch -- is never attended, masked for the MAE loss or counted by any loss; the
        resynthesis is zero past each clip's end. With ``use_mae`` the encoder input has
        ``mae_mask_ratio`` of its real frames replaced by the mask embedding, drawn with
        ``mae_generator`` (or given as ``mae_mask`` ``(B, T)``, True = masked): with
        ``mae_pass="shared"`` that masked pass is also the one quantized and decoded, with
        ``"separate"`` it only feeds the MAE loss. Without ``use_mae`` the pass is the clean one
        that inference runs.
        """
        if self.inference_only:
            raise RuntimeError("this generator was built with inference_only=True (no MAE/AR heads) and "
                               "cannot train; build it with inference_only=False")
        b, length = wav.shape[0], wav.shape[-1]
        if lengths is None:
            lengths = torch.full((b,), length, dtype=torch.long, device=wav.device)
        lengths = lengths.to(device=wav.device, dtype=torch.long)
        wav = self.pad_to_window(wav, window)
        n_frames = wav.shape[-1] // self.hop_length
        frame_len, token_len = self.valid_counts(lengths, window)
        token_mask = torch.arange(n_frames // window, device=wav.device) < token_len.unsqueeze(1)

        frame_mask = None
        if use_mae and self.mae_mask_ratio > 0:
            frame_mask = mae_mask if mae_mask is not None else random_frame_mask(
                b, n_frames, self.mae_mask_ratio, wav.device, mae_generator, lengths=frame_len)
        frames = self.patchify_frames(wav, n_frames, frame_len)  # (B, T, C)
        masked = None
        if frame_mask is not None:
            masked = torch.where(frame_mask.unsqueeze(-1), self.mae_mask_token.to(frames.dtype), frames)
        decoded = masked if masked is not None and self.mae_pass == "shared" else frames
        queries, enc_frames = self.encode_frames(decoded, window, token_len * window)
        if masked is not None and self.mae_pass == "separate":  # MAE reads a second, masked pass
            enc_frames = self.encode_frames(masked, window, token_len * window)[1]
        quantized, codes, latents, commit, cb_loss = self.quantizer(queries, mask=token_mask)
        resyn = self.decode_latents(quantized, window, token_len)[..., :length]
        sample_mask = torch.arange(length, device=wav.device) < lengths.unsqueeze(1)
        resyn = resyn * sample_mask.unsqueeze(1).to(resyn.dtype)

        zero = wav.new_zeros(())
        mae = zero
        if frame_mask is not None:
            frame_pad = torch.arange(n_frames, device=wav.device) >= frame_len.unsqueeze(1)
            mae = self.mae_head.loss(enc_frames, self.mae_target(wav), frame_mask, frame_pad)
        ar = self.ar_head.loss(latents, token_mask) if use_ar else zero
        return dict(resyn=resyn, codes=codes, commit=commit, codebook=cb_loss, mae=mae, ar=ar)

    def quantize(self, queries: torch.Tensor, n_q: Optional[int] = None) -> torch.Tensor:
        """Query outputs ``(B, N, C)`` -> codes ``(B, n_q, N)``. The quantizer runs in float32
        even under autocast (bf16/fp16), in training as here, so precision only enters through
        the encoder's output."""
        return self.quantizer(queries, n_q=n_q)[1]

    def _context_tokens(self, chunking: Optional[ChunkingConfig], window: int) -> Optional[int]:
        return None if chunking is None else chunking.groups(self.frame_rate, window)[0]

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, window: int, lengths: Optional[torch.Tensor] = None,
               n_q: Optional[int] = None, chunking: Optional[ChunkingConfig] = None) -> torch.Tensor:
        """``wav`` ``(B, 1, T_wav)`` (zero-padded; ``lengths`` ``(B,)`` samples) -> codes ``(B, n_q, N)``.

        ``N = ceil(T_wav / (hop_length * w))``; with ``lengths`` the codes past a clip's own
        ``ceil(length / (hop_length * w))`` tokens are padding. With ``chunking``, a clip longer
        than its context is encoded in Transformer windows of that context
        (:mod:`espnet2_almtok.codec.streaming`; its padding codes are 0); clips within one
        context take the whole-clip path, so their codes do not depend on ``chunking``.
        """
        window = self.check_window(window)
        n_q = self.quantizer.check_n_q(n_q)
        context = self._context_tokens(chunking, window)
        unit = self.hop_length * window
        sizes = lengths if lengths is not None else torch.full((wav.shape[0],), wav.shape[-1])
        tokens = (sizes.to("cpu", torch.long) + unit - 1) // unit
        if context is not None and int(tokens.max()) > context:
            return self._encode_long_batch(wav, window, sizes.to("cpu", torch.long), tokens, n_q, chunking)
        wav = self.pad_to_window(wav, window)
        n_frames = wav.shape[-1] // self.hop_length
        frames_len = None
        if lengths is not None:
            frames_len = self.valid_counts(lengths, window)[1] * window
        frames = self.patchify_frames(wav, n_frames)
        queries, _ = self.encode_frames(frames, window, frames_len)
        return self.quantize(queries, n_q)

    def _encode_long_batch(self, wav, window, sizes, tokens, n_q, chunking) -> torch.Tensor:
        """A batch with clips beyond the context: those within it together on the whole-clip
        path, each longer one alone in windows; so every clip's codes are its one-by-one codes."""
        out = torch.zeros(wav.shape[0], n_q, int(tokens.max()), dtype=torch.long, device=wav.device)
        context = self._context_tokens(chunking, window)
        short = [i for i in range(wav.shape[0]) if tokens[i] <= context]
        if short:
            width = int(sizes[short].max())
            codes = self.encode(wav[short, :, :width], window, lengths=sizes[short].to(wav.device), n_q=n_q)
            out[short, :, : codes.shape[-1]] = codes
        for i in range(wav.shape[0]):
            if tokens[i] > context:
                out[i, :, : int(tokens[i])] = encode_long(self, TensorSource(wav[i, 0, : int(sizes[i])]), window,
                                                          chunking, n_q)
        return out

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, window: int, chunking: Optional[ChunkingConfig] = None) -> torch.Tensor:
        """codes ``(B, n_q', N)`` -> waveform ``(B, 1, N * w * hop_length)``; with ``chunking``,
        codes longer than its context are decoded in windows (see :meth:`encode`)."""
        window = self.check_window(window)
        context = self._context_tokens(chunking, window)
        if context is not None and codes.shape[-1] > context:
            self.quantizer.check_codes(codes)
            out = torch.empty(codes.shape[0], 1, codes.shape[-1] * window * self.hop_length, device=codes.device)
            for i, c in enumerate(codes):
                at = 0
                for block in decode_long(self, c, window, chunking):  # no list of blocks: one copy of the output
                    out[i, 0, at: at + block.numel()] = block
                    at += block.numel()
            return out
        return self.decode_latents(self.quantizer.decode(codes), window)

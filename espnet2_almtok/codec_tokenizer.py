"""The codec as a *tokenizer choice*: ALMTokenizer, or any ESPnet codec trained by ``ALMTokCodecTask``.

    >>> tok = load_codec_tokenizer("exp/codec_train_dac_stage1")      # config.yaml says codec: dac
    >>> codes, lengths = tok.encode([wav], 16000, window=None, return_lengths=True)   # (B, n_q, N)
    >>> wav_hat = tok.decode(codes)                                    # (B, T)

Both kinds share the interface the LM recipe uses: ``encode``/``decode``, ``n_q``,
``codebook_size``, ``sample_rate``, ``check_window``, ``token_rate``/``bitrate`` and
``windowed`` (False for ESPnet codecs: their token rate is fixed, ``window`` is ignored).
"""

import logging
import math
import zipfile
from pathlib import Path
from typing import Optional, Union

import torch
import yaml

from espnet2_almtok.api import ALMTokenizer, _find_config, _find_model_file, load_state_dict


def codec_kind(path: Union[str, Path]) -> str:
    """The ``codec`` of an exp dir (``almtok`` for packed zips, which only ALMTokenizer writes)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return "almtok"
    if not path.is_dir():
        raise FileNotFoundError(f"codec model {path} does not exist; give an exp dir or a packed .zip")
    return (yaml.safe_load(_find_config(path).read_text()) or {}).get("codec", "almtok")


def load_codec_tokenizer(path: Union[str, Path], model_file: Optional[Union[str, Path]] = None,
                         device: Union[str, torch.device] = "cpu", context_s: Optional[float] = None,
                         overlap_s: Optional[float] = None, chunk_batch: int = 8, dtype: Optional[str] = None):
    """ALMTokenizer for ``codec: almtok`` models, :class:`ESPnetCodecTokenizer` otherwise.

    ``context_s``/``overlap_s``/``chunk_batch`` (long audio) and ``dtype`` (autocast) apply to
    ALMTokenizer; ESPnet's convolutional codecs have no Transformer context and run in float32.
    """
    if codec_kind(path) == "almtok":
        return ALMTokenizer.from_pretrained(path, model_file, device=device, context_s=context_s,
                                            overlap_s=overlap_s, chunk_batch=chunk_batch, dtype=dtype)
    if dtype not in (None, "float32", torch.float32):
        logging.warning(f"{path}: dtype {dtype} applies to ALMTokenizer only; this ESPnet codec runs in float32")
    return ESPnetCodecTokenizer.from_pretrained(path, model_file, device=device)


class ESPnetCodecTokenizer(torch.nn.Module):
    """SoundStream / Encodec / DAC / FunCodec of ESPnet behind the ALMTokenizer interface."""

    windowed = False

    def __init__(self, codec: torch.nn.Module, codec_conf: dict, kind: str):
        super().__init__()
        self.codec = codec.eval()
        self.kind = kind
        gp = codec_conf.get("generator_params", {})
        self.sample_rate = int(codec_conf.get("sampling_rate", 16000))
        self.hop_length = math.prod(gp.get("encdec_ratios", [8, 5, 4, 2]))
        self.codebook_size = int(gp.get("quantizer_bins", 1024))
        with torch.no_grad():
            probe = self.codec.encode(torch.zeros(1, 1, self.hop_length * 4, device=self.device))
        self.n_q = int(probe.shape[0])

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], model_file=None, device="cpu") -> "ESPnetCodecTokenizer":
        from espnet2_almtok.startup import import_quietly

        task = import_quietly("espnet2_almtok.tasks.codec").ALMTokCodecTask
        path = Path(path)
        config = _find_config(path)
        model_file = Path(model_file) if model_file else _find_model_file(path)
        model, args = task.build_model_from_file(config, None, device)
        model.load_state_dict(load_state_dict(model_file))
        return cls(model.codec, args.codec_conf, args.codec).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.codec.parameters()).device

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def check_window(self, window: Optional[int]) -> Optional[int]:
        return window  # fixed-rate codec: no query window

    def token_rate(self, window: Optional[int] = None) -> float:
        return self.frame_rate

    def bitrate(self, window: Optional[int] = None) -> float:
        return self.frame_rate * self.n_q * math.log2(self.codebook_size)

    def num_tokens(self, num_samples: int, window: Optional[int] = None) -> int:
        return math.ceil(num_samples / self.hop_length)

    @torch.no_grad()
    def encode(self, wav, sample_rate: Optional[int] = None, window: Optional[int] = None,
               n_q: Optional[int] = None, return_lengths: bool = False, channels_first: Optional[bool] = None):
        """Audio (as :meth:`ALMTokenizer.encode` takes it) -> codes ``(B, n_q, N)``.

        Clips are encoded one at a time (ESPnet's conv codecs are not padding-exact) and the
        tail is zero-padded to a whole frame.
        """
        from espnet2_almtok.audio import as_clips, resample, validate_waveform

        clips, sample_rate = as_clips(wav, sample_rate, channels_first)
        out, lengths = [], []
        for i, c in enumerate(clips):
            validate_waveform(c, f"clip {i}")
            c = resample(c, sample_rate, self.sample_rate, f"clip {i}")
            n = self.num_tokens(c.numel())
            x = torch.nn.functional.pad(c, (0, n * self.hop_length - c.numel())).to(self.device)
            codes = self.codec.encode(x.view(1, 1, -1))[:, 0, :n]  # (n_q, N)
            out.append(codes[:n_q] if n_q else codes)
            lengths.append(n)
        batch = torch.zeros(len(out), out[0].shape[0], max(lengths), dtype=torch.long, device=self.device)
        for i, c in enumerate(out):
            batch[i, :, : c.shape[1]] = c
        if return_lengths:
            return batch, torch.tensor(lengths, device=self.device)
        return batch

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, window: Optional[int] = None) -> torch.Tensor:
        """Codes ``(B, n_q, N)`` or ``(n_q, N)`` -> waveform ``(B, T)``."""
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        wav = self.codec.decode(codes.long().to(self.device).transpose(0, 1))  # ESPnet: (n_q, B, N)
        return wav.reshape(codes.shape[0], -1)

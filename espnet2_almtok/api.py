"""``ALMTokenizer``: the Python API for users who just want tokens.

    >>> from espnet2_almtok import ALMTokenizer
    >>> tok = ALMTokenizer.from_pretrained("exp/codec_train_almtok_stage2")   # or a packed .zip
    >>> codes = tok.encode(wav, sample_rate=16000, window=4)   # LongTensor (B, n_q, N)
    >>> wav_hat = tok.decode(codes, window=4)                   # FloatTensor (B, T_wav)
    >>> tok.token_rate(4), tok.bitrate(4), tok.sample_rate

Input audio may be a file path, ``(T,)``, one multi-channel clip ``(C, T)`` / ``(T, C)``
(``channels_first``; default: the shorter axis is channels), a batch ``(B, C, T)``, or a list of
clips of unequal lengths; integer PCM is scaled; other rates are resampled, channels are averaged, the tail is zero-padded
to a whole token, and padding never changes a clip's codes (batch == one-by-one).
"""

import math
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from espnet2_almtok.audio import AudioError, as_clips, resample, validate_waveform

ArrayLike = Union[torch.Tensor, np.ndarray]

# Looked for in an exp dir, in this order, when no model_file is given.
MODEL_FILE_CANDIDATES = (
    "model.pth",  # packed by the recipe (stage 9)
    "valid.mel_loss.best.pth",
    "valid.loss.best.pth",
    "latest.pth",
    "checkpoint.pth",  # the trainer's resume file: {"model": state_dict, ...}
)


def _find_model_file(exp_dir: Path) -> Path:
    for name in MODEL_FILE_CANDIDATES:
        if (exp_dir / name).exists():
            return exp_dir / name
    epochs = sorted(exp_dir.glob("*epoch.pth"), key=lambda p: int(p.name.split("epoch")[0]))
    if epochs:
        return epochs[-1]
    raise FileNotFoundError(
        f"no model file in {exp_dir}: looked for {', '.join(MODEL_FILE_CANDIDATES)} and "
        "N epoch.pth; pass model_file= explicitly or train the model first")


def _find_config(exp_dir: Path) -> Path:
    for name in ("config.yaml", "train.yaml"):
        if (exp_dir / name).is_file():
            return exp_dir / name
    raise FileNotFoundError(f"no config.yaml in {exp_dir}; is it an ESPnet exp dir or packed model?")


def _read_config(config: Union[str, Path]) -> dict:
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist")
    with open(config) as f:
        conf = yaml.safe_load(f) or {}
    codec = conf.get("codec", "almtok")
    if codec != "almtok":
        raise ValueError(f"{config} configures codec '{codec}'; ALMTokenizer loads only 'almtok' models "
                         "(use espnet2_almtok.bin.codec_inference for ESPnet's codecs)")
    return conf


def load_state_dict(model_file: Union[str, Path]) -> dict:
    """The weights of an ESPnet model file: a saved ``state_dict`` or a trainer checkpoint
    (``checkpoint.pth``: ``{"model": state_dict, "optimizers": ...}``).

    Read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
    crafted file cannot run code. A file holding anything else is refused, naming it.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"model file {model_file} does not exist")
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{model_file} holds objects other than tensors and plain containers, so it is not loaded "
            "(loading it could run code). Give a model file written by the trainer (latest.pth, "
            f"<N>epoch.pth, valid.*.best.pth) or a packed model. ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{model_file} is not a readable PyTorch file (truncated or corrupted?): {e}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{model_file} is not a state dict of tensors (got {type(state).__name__})")
    return state


class ALMTokenizer(torch.nn.Module):
    """Audio <-> ALMTokenizer codes. Build with :meth:`from_pretrained` or :meth:`from_config`."""

    windowed = True  # the token rate is chosen per call by the query window w

    def __init__(self, codec_conf: dict, source: str = "<config>"):
        super().__init__()
        from espnet2_almtok.codec.almtok import ALMTokenizerCodec

        self.codec = ALMTokenizerCodec(**codec_conf)
        self.codec.eval()
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Union[str, Path], use_priors: bool = True) -> "ALMTokenizer":
        """An untrained tokenizer of a training config (tests, benchmarks, shape checks).

        ``use_priors=False`` ignores the config's ``codebook_init`` files (random codebooks).
        """
        conf = _read_config(config)
        codec_conf = dict(conf.get("codec_conf") or {})
        if not use_priors:
            codec_conf["generator_params"] = {**codec_conf.get("generator_params", {}), "codebook_init": None}
        return cls(codec_conf, source=str(config))

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], model_file: Optional[Union[str, Path]] = None,
                        device: Union[str, torch.device] = "cpu") -> "ALMTokenizer":
        """Load a trained tokenizer from an ESPnet exp dir or a zip packed by the recipe."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; give an exp dir or a packed .zip")
        if path.is_file() and zipfile.is_zipfile(path):
            tmp = Path(tempfile.mkdtemp(prefix="almtok_"))
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp)
            roots = [p.parent for p in tmp.rglob("config.yaml")]
            if not roots:
                raise FileNotFoundError(f"{path} holds no config.yaml; pack it with the recipe's stage 9")
            path = roots[0]
        elif path.is_file():
            raise ValueError(f"{path} is a file but not a zip; give the exp dir (with config.yaml) instead")
        config = _find_config(path)
        model_file = Path(model_file) if model_file else _find_model_file(path)
        conf = _read_config(config)
        codec_conf = dict(conf.get("codec_conf") or {})
        # The codebooks are in the weights: the prior .npy files are not needed (nor shipped).
        codec_conf["generator_params"] = {**codec_conf.get("generator_params", {}), "codebook_init": None}
        tok = cls(codec_conf, source=str(path))
        tok.load_weights(model_file)
        return tok.to(device)

    def load_weights(self, model_file: Union[str, Path]) -> None:
        """Load an ESPnet model state dict (``codec.*`` keys) or a trainer checkpoint."""
        state = load_state_dict(model_file)
        state = {k[len("codec."):] if k.startswith("codec.") else k: v for k, v in state.items()}
        try:
            self.codec.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ValueError(
                f"{model_file} does not fit the model of {self.source}: it was trained with another "
                f"config (e.g. other widths, layers or codebook size). Use the config.yaml saved "
                f"next to that checkpoint. Details: {' '.join(first[:3])[:600]}") from e

    # ------------------------------------------------------------------ properties
    @property
    def generator(self):
        return self.codec.generator

    @property
    def sample_rate(self) -> int:
        return self.generator.sample_rate

    @property
    def windows(self) -> List[int]:
        return list(self.generator.windows)

    @property
    def n_q(self) -> int:
        return self.generator.n_q

    @property
    def codebook_size(self) -> int:
        return self.generator.codebook_size

    @property
    def device(self) -> torch.device:
        return self.generator.query_token.device

    def check_window(self, window: int) -> int:
        """``window`` if the model was trained for it, else a ValueError listing the trained ones."""
        return self.generator.check_window(window)

    def token_rate(self, window: int) -> float:
        """Tokens (query positions) per second of audio for window ``w``; each has ``n_q`` codes."""
        return self.generator.frame_rate / self.generator.check_window(window)

    def bitrate(self, window: int) -> float:
        """Bits per second: ``token_rate * n_q * log2(codebook_size)``."""
        return self.token_rate(window) * self.n_q * math.log2(self.codebook_size)

    def num_tokens(self, num_samples: int, window: int) -> int:
        """Tokens for a clip of ``num_samples`` samples at :attr:`sample_rate`."""
        return math.ceil(num_samples / (self.generator.hop_length * window))

    # ------------------------------------------------------------------ encode / decode
    def _prepare(self, wav, sample_rate: Optional[int], channels_first: Optional[bool] = None):
        """-> padded ``(B, 1, T_max)`` at the model rate and lengths ``(B,)``.

        ``wav``: a file path; ``(T,)``; one multi-channel clip ``(C, T)`` or ``(T, C)`` (see
        :func:`espnet2_almtok.audio.to_mono_tensor` for ``channels_first``); a batch ``(B, C, T)``;
        or a list of clips of unequal lengths. Integer PCM is scaled to [-1, 1].
        """
        clips, sample_rate = as_clips(wav, sample_rate, channels_first)
        out = []
        for i, c in enumerate(clips):
            name = f"clip {i}" if len(clips) > 1 else "input"
            validate_waveform(c, name)
            out.append(resample(c, sample_rate, self.sample_rate, name))
        lengths = torch.tensor([c.numel() for c in out])
        batch = torch.zeros(len(out), 1, int(lengths.max()))
        for i, c in enumerate(out):
            batch[i, 0, : c.numel()] = c
        return batch.to(self.device), lengths.to(self.device)

    @torch.no_grad()
    def encode(self, wav: Union[str, Path, ArrayLike, Sequence[ArrayLike]], sample_rate: Optional[int] = None,
               window: int = 4, n_q: Optional[int] = None, return_lengths: bool = False,
               channels_first: Optional[bool] = None):
        """Audio -> codes ``(B, n_q, N)`` (LongTensor). With ``return_lengths``, also the valid
        token count of each clip ``(B,)`` (clips shorter than the longest are padded).

        A 2-D input is *one* clip with channels (averaged); batch clips as ``(B, C, T)`` or a list.
        """
        window = self.generator.check_window(window)
        batch, lengths = self._prepare(wav, sample_rate, channels_first)
        codes = self.generator.encode(batch, window, lengths=lengths if len(lengths) > 1 else None, n_q=n_q)
        if return_lengths:
            unit = self.generator.hop_length * window
            return codes, (lengths + unit - 1) // unit
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, window: int = 4) -> torch.Tensor:
        """Codes ``(B, n_q', N)`` or ``(n_q', N)`` -> waveform ``(B, N * w * hop)`` at :attr:`sample_rate`."""
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dtype.is_floating_point:
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        return self.generator.decode(codes.long().to(self.device), window).squeeze(1)

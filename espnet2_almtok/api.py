"""``ALMTokenizer``: the Python API for users who just want tokens.

    >>> from espnet2_almtok import ALMTokenizer
    >>> tok = ALMTokenizer.from_pretrained("exp/codec_train_almtok_stage2")   # or a packed .zip
    >>> codes = tok.encode(wav, sample_rate=16000, window=4)   # LongTensor (B, n_q, N)
    >>> wav_hat = tok.decode(codes, window=4)                   # FloatTensor (B, T_wav)
    >>> tok.token_rate(4), tok.bitrate(4), tok.sample_rate

Long audio is encoded and decoded in Transformer windows of the training crop's length
(``context_s``, see :mod:`espnet2_almtok.codec.chunking`): cost linear in length, clips within
one context coded exactly as by a whole-clip pass. ``encode_source``/``decode_blocks`` stream a
clip of any length with bounded memory. Only the generator's inference parts are built and
loaded (no discriminator, no MAE/AR heads); ``dtype="bfloat16"``/``"float16"`` runs the
networks under autocast (the codebook search stays float32).

Input audio may be a file path, ``(T,)``, one multi-channel clip ``(C, T)`` / ``(T, C)``
(``channels_first``; default: the shorter axis is channels), a batch ``(B, C, T)``, or a list of
clips of unequal lengths; integer PCM is scaled; other rates are resampled, channels are averaged, the tail is zero-padded
to a whole token, and padding never changes a clip's codes (batch == one-by-one).
"""

import contextlib
import logging
import math
import pickle
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from espnet2_almtok.audio import AudioError, as_clips, resample, validate_waveform
from espnet2_almtok.codec.chunking import DEFAULT_CONTEXT_S, ChunkingConfig
from espnet2_almtok.fileio import file_sha256

ArrayLike = Union[torch.Tensor, np.ndarray]

# Looked for in an exp dir, in this order, when no model_file is given.
MODEL_FILE_CANDIDATES = (
    "model.pth",  # packed by the recipe (stage 9)
    "valid.mel_loss.best.pth",
    "valid.loss.best.pth",
    "latest.pth",
    "checkpoint.pth",  # the trainer's resume file: {"model": state_dict, ...}
)


def choose_model_file(names: Sequence[str]) -> Optional[str]:
    """The model file among ``names`` (file names in one directory), by
    :data:`MODEL_FILE_CANDIDATES`, then the highest ``<N>epoch.pth``; None if there is none."""
    names = set(names)
    for name in MODEL_FILE_CANDIDATES:
        if name in names:
            return name
    epochs = sorted((n for n in names if n.endswith("epoch.pth") and n.split("epoch")[0].isdigit()),
                    key=lambda n: int(n.split("epoch")[0]))
    return epochs[-1] if epochs else None


def _find_model_file(exp_dir: Path) -> Path:
    name = choose_model_file([p.name for p in exp_dir.iterdir() if p.is_file()]) if exp_dir.is_dir() else None
    if name is None:
        raise FileNotFoundError(
            f"no model file in {exp_dir}: looked for {', '.join(MODEL_FILE_CANDIDATES)} and "
            "N epoch.pth; pass model_file= explicitly or train the model first")
    return exp_dir / name


def _find_config(exp_dir: Path) -> Path:
    for name in ("config.yaml", "train.yaml"):
        if (exp_dir / name).is_file():
            return exp_dir / name
    raise FileNotFoundError(f"no config.yaml in {exp_dir}; is it an ESPnet exp dir or packed model?")


def _read_config(config: Union[str, Path]) -> dict:
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist")
    try:
        with open(config) as f:
            conf = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"config {config} is not a YAML file ({str(e).splitlines()[0]}); give the "
                         "config.yaml that training wrote (or a conf/tuning/*.yaml)") from None
    if not isinstance(conf, dict):
        raise ValueError(f"config {config} holds a {type(conf).__name__}, not a mapping of options; give the "
                         "config.yaml that training wrote (or a conf/tuning/*.yaml)")
    if not conf:
        raise ValueError(f"config {config} is empty (a cut or failed write?); restore the config.yaml that "
                         "training wrote")
    if "output_dir" in conf and "config" in conf and "version" not in conf:
        # ESPnet writes its arguments in order, 'version' at the end (training and --print_config alike):
        # a file without it was cut short, and the keys it lost (e.g. crop_length, the coding context)
        # would take defaults
        raise ValueError(f"config {config} looks cut short: it lacks 'version', which ESPnet writes at the end, "
                         "so other keys are missing too; restore the config.yaml that training wrote")
    from espnet2_almtok.config_stamp import check_config_stamp

    check_config_stamp(config)  # edited after training: other settings than the weights were trained with
    codec = conf.get("codec", "almtok")
    if codec != "almtok":
        raise ValueError(f"{config} configures codec '{codec}'; ALMTokenizer loads only 'almtok' models "
                         "(use espnet2_almtok.bin.codec_inference for ESPnet's codecs)")
    return conf


def load_weights_only(model_file: Union[str, Path], mmap: bool = False):
    """``torch.load(model_file, weights_only=True)``: tensors and plain containers only, so a
    crafted file cannot run code. A missing, unreadable or crafted file is refused, naming it.
    With ``mmap`` the tensors stay on disk until used."""
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"model file {model_file} does not exist")
    try:
        try:
            return torch.load(model_file, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            return torch.load(model_file, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError as e:
        garbage = [line.strip() for line in str(e).splitlines() if "Unsupported operand" in line]
        if garbage:  # not a pickle at all
            raise ValueError(f"{model_file} is not a readable PyTorch file (truncated or corrupted?): "
                             f"{garbage[0]}") from None
        raise ValueError(
            f"{model_file} holds objects other than tensors and plain containers, so it is not loaded "
            "(loading it could run code). Give a model file written by the trainer (latest.pth, "
            f"<N>epoch.pth, valid.*.best.pth) or a packed model. ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{model_file} is not a readable PyTorch file (truncated or corrupted?): {e}") from None


def load_state_dict(model_file: Union[str, Path], mmap: bool = False) -> dict:
    """The weights of an ESPnet model file: a saved ``state_dict`` or a trainer checkpoint
    (``checkpoint.pth``: ``{"model": state_dict, "optimizers": ...}``), read by
    :func:`load_weights_only` (a crafted file cannot run code). A file holding anything else is
    refused, naming it. With ``mmap`` the tensors stay on disk until used (only the ones copied
    into a model are read).
    """
    state = load_weights_only(model_file, mmap=mmap)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{model_file} is not a state dict of tensors (got {type(state).__name__})")
    return state


def generator_state(state: dict, model_file: Union[str, Path]) -> dict:
    """The generator's inference weights in a state dict: keys ``codec.generator.*`` (an ESPnet
    model file), ``generator.*`` (a codec's) or a bare generator's; the discriminator and the
    training-only heads are left out. A file without generator weights is refused, naming it."""
    from espnet2_almtok.codec.generator import TRAINING_ONLY_PREFIXES

    for prefix in ("codec.generator.", "generator.", ""):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "query_token" in sub:
            kept = {k: v for k, v in sub.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
            broken = [k for k, v in kept.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if broken:  # a diverged training: it would give one code for everything and non-finite audio
                raise ValueError(f"{model_file}: {len(broken)} generator weight tensor(s) hold NaN/inf (e.g. "
                                 f"{', '.join(broken[:3])}): the training diverged. Use an earlier checkpoint "
                                 "(<N>epoch.pth) or retrain with a lower learning rate")
            return kept
    examples = ", ".join(sorted(state)[:3]) or "none"
    raise ValueError(
        f"{model_file} holds no ALMTokenizer generator weights (no 'codec.generator.*' keys; it has "
        f"{len(state)} tensors, e.g. {examples}). Give the model file that training the codec wrote "
        "(valid.mel_loss.best.pth, latest.pth, <N>epoch.pth, checkpoint.pth) or a packed model.")


def inference_state_dict(model_file: Union[str, Path]) -> dict:
    """What a packed model needs to ship: the generator's inference weights of ``model_file``,
    with the ESPnet keys (``codec.generator.*``) that :meth:`ALMTokenizer.from_pretrained` reads."""
    state = generator_state(load_state_dict(model_file, mmap=True), model_file)
    return {f"codec.generator.{k}": v.clone() for k, v in state.items()}


def _chunking_of(conf: dict, context_s: Optional[float], overlap_s: Optional[float],
                 chunk_batch: int) -> ChunkingConfig:
    """The context: ``context_s`` if given, else the config's training crop (``crop_length``
    samples at its rate), else :data:`DEFAULT_CONTEXT_S`."""
    if context_s is None:
        crop = int(conf.get("crop_length") or 0)
        fs = int((conf.get("codec_conf") or {}).get("sampling_rate", 16000))
        context_s = crop / fs if crop > 0 else DEFAULT_CONTEXT_S
    return ChunkingConfig(context_s=context_s, overlap_s=overlap_s, chunk_batch=chunk_batch)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _as_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")


@contextlib.contextmanager
def extracted_model(path: Path, model_file: Optional[Union[str, Path]]):
    """-> (config.yaml, model file, the model file's name for messages) of an exp dir, or of a
    packed zip extracted (those two files only) into a temporary directory that is removed when
    the block ends, whatever happens."""
    if path.is_file() and path.suffix in (".pth", ".pt", ".yaml", ".yml"):
        hint = f", model_file='{path.name}'" if path.suffix in (".pth", ".pt") else ""
        raise ValueError(f"{path} is a {'model' if hint else 'config'} file, not a model: give the exp dir that "
                         f"holds it, from_pretrained('{path.parent}'{hint}), or a packed .zip")
    if not (path.is_file() and zipfile.is_zipfile(path)):
        if path.is_file():
            raise ValueError(f"{path} is a file but not a readable zip (a truncated or corrupted download?): "
                             f"re-download the model or re-pack it (recipe stage 9), or give the exp dir "
                             "(with config.yaml) instead")
        weights = Path(model_file) if model_file else _find_model_file(path)
        yield _find_config(path), weights, str(weights)
        return
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="almtok_") as tmp:
        config, weights = _zip_members(zf, path, model_file)
        sums = packed_checksums(zf, path)
        files = [_extract_verified(zf, path, name, tmp, sums) for name in (config, weights)]
        yield files[0], files[1], f"{path}:{weights}"


# ---------------------------------------------------------------------------- packed zip checksums
CHECKSUM_KEY = "sha256"  # in a packed zip's meta.yaml: {member name: sha256 hex digest} (recipe stage 9)
REPACK_ADVICE = ("re-download the model or re-pack it (python -m espnet2_almtok.recipe.pack, recipe "
                 "stage 9) from the exp dir")


MAX_YAML_BYTES = 16 << 20    # meta.yaml / config.yaml in a packed zip (ours are a few kB)
MAX_MEMBER_BYTES = 64 << 30  # any extracted member (the paper-size model's weights are ~1 GB)


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): a few kB of nested aliases (a "billion
    laughs" file) expand to gigabytes in memory; nothing we write uses them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed here", event.start_mark)
        return super().compose_node(parent, index)


def read_zip_yaml(zf: zipfile.ZipFile, path: Path, name: str):
    """Member ``name`` read as YAML (safe, without aliases), refused past :data:`MAX_YAML_BYTES`."""
    size = zf.getinfo(name).file_size
    if size > MAX_YAML_BYTES:
        raise ValueError(f"{path}: member {name} is {size} bytes, over the {MAX_YAML_BYTES} a YAML file of a packed "
                         f"model may have; {REPACK_ADVICE}")
    try:
        return yaml.load(zf.read(name), Loader=_NoAliasLoader)
    except yaml.composer.ComposerError as e:
        raise ValueError(f"{path}: member {name} uses YAML aliases ({e.problem}), which a packed model never "
                         f"needs and which can expand without bound; {REPACK_ADVICE}") from None


def packed_checksums(zf: zipfile.ZipFile, path: Path) -> Optional[dict]:
    """``{member: sha256}`` recorded in a packed zip's ``meta.yaml``, or None for a zip packed
    without checksums (older packs, other tools): those load with a warning."""
    try:
        meta = read_zip_yaml(zf, path, "meta.yaml") if "meta.yaml" in zf.namelist() else None
    except (zipfile.BadZipFile, zlib.error, yaml.YAMLError) as e:
        raise ValueError(f"{path}: its meta.yaml is corrupted ({e}); {REPACK_ADVICE}") from None
    sums = meta.get(CHECKSUM_KEY) if isinstance(meta, dict) else None
    if sums is None:
        logging.warning(f"{path} records no checksum of its files (packed before checksums were added, "
                        "or by another tool): it is loaded unverified. Re-pack it to add them.")
        return None
    if not isinstance(sums, dict):
        raise ValueError(f"{path}: meta.yaml's '{CHECKSUM_KEY}' must map member names to sha256 digests, "
                         f"got {type(sums).__name__}; {REPACK_ADVICE}")
    return {str(k): str(v) for k, v in sums.items()}


def _extract_verified(zf: zipfile.ZipFile, path: Path, name: str, tmp: str, sums: Optional[dict]) -> Path:
    """Extract member ``name`` into ``tmp`` and check it against its recorded sha256 (``sums``;
    None: unchecked). A corrupted or altered member is refused, naming the zip and the member, and so
    is a member over :data:`MAX_MEMBER_BYTES` (YAML: :data:`MAX_YAML_BYTES`). ``zipfile`` cleans the
    name (no absolute path, no ``..``): the member lands under ``tmp``."""
    size = zf.getinfo(name).file_size
    limit = MAX_YAML_BYTES if name.endswith((".yaml", ".yml")) else MAX_MEMBER_BYTES
    if size > limit:
        raise ValueError(f"{path}: member {name} is {size} bytes, over the {limit} allowed; {REPACK_ADVICE}")
    free = shutil.disk_usage(tmp).free
    if size > free:
        raise ValueError(f"{path}: member {name} is {size / 1e9:.2f} GB, more than the {free / 1e9:.2f} GB free in "
                         f"the temporary directory {Path(tmp).parent} it is extracted to; free space there or set "
                         "TMPDIR to a directory on a larger disk")
    try:
        out = Path(zf.extract(name, tmp))
        if Path(tmp).resolve() not in out.resolve().parents:
            raise ValueError(f"{path}: member {name} would be written outside the extraction directory; {REPACK_ADVICE}")
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"{path}: member {name} is corrupted ({e}); {REPACK_ADVICE}") from None
    if sums is None:
        return out
    if name not in sums:
        logging.warning(f"{path}: member {name} has no recorded checksum; it is loaded unverified")
        return out
    digest = file_sha256(out)
    if digest != sums[name]:
        raise ValueError(f"{path}: member {name} does not match the sha256 recorded when it was packed "
                         f"(recorded {sums[name][:16]}..., found {digest[:16]}...): the file is corrupted "
                         f"or was altered; {REPACK_ADVICE}")
    return out


def verify_packed(path: Union[str, Path]) -> None:
    """Check every member of a packed zip that has a recorded sha256 (for readers that unpack the
    whole zip, e.g. ESPnet's ``unpack``); raises naming the zip and the member on a mismatch."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="almtok_verify_") as tmp:
        sums = packed_checksums(zf, path)
        for name in sorted(sums or {}):
            if name not in zf.namelist():
                raise ValueError(f"{path}: member {name}, listed in its meta.yaml, is missing; {REPACK_ADVICE}")
            _extract_verified(zf, path, name, tmp, sums).unlink()


def _zip_members(zf: zipfile.ZipFile, path: Path, model_file) -> tuple:
    """Names of the config and the model file in a packed zip: ESPnet's pack format (a top-level
    ``meta.yaml`` listing ``yaml_files`` and ``files``, which the recipe's stage 9 writes too) or
    any zip with a ``*/config.yaml`` and the model file beside it. ``model_file`` is a member path
    or a file name beside the config."""
    names = zf.namelist()
    meta = read_zip_yaml(zf, path, "meta.yaml") if "meta.yaml" in names else None
    if isinstance(meta, dict) and isinstance(meta.get("yaml_files"), dict) and isinstance(meta.get("files"), dict):
        configs = [v for v in meta["yaml_files"].values() if str(v) in names]
        models = [v for v in meta["files"].values() if str(v).endswith(".pth") and str(v) in names]
        if configs and models and (not model_file or str(model_file) in names):
            return str(configs[0]), str(model_file or models[0])
        # model_file=NAME not a member path: looked up beside config.yaml below
    configs = sorted((n for n in names if n.rsplit("/", 1)[-1] == "config.yaml"), key=len)
    if not configs:
        raise FileNotFoundError(f"{path} holds no config.yaml; pack it with the recipe's stage 9")
    root = configs[0][: -len("config.yaml")]
    if model_file:
        weights = root + str(model_file)
        if weights not in names:
            raise FileNotFoundError(f"{path} holds no {model_file} beside {configs[0]}")
        return configs[0], weights
    name = choose_model_file([n[len(root):] for n in names if n.startswith(root) and "/" not in n[len(root):]])
    if name is None:
        raise FileNotFoundError(f"{path} holds no model file beside {configs[0]} (looked for "
                                f"{', '.join(MODEL_FILE_CANDIDATES)} and N epoch.pth)")
    return configs[0], root + name


class ALMTokenizer(torch.nn.Module):
    """Audio <-> ALMTokenizer codes. Build with :meth:`from_pretrained` or :meth:`from_config`.

    Holds the generator's inference parts only (:class:`ALMTokenizerGenerator` with
    ``inference_only=True``). ``chunking`` sets the Transformer context for long audio;
    ``dtype`` the precision of the networks (autocast; codebook search in float32).
    """

    windowed = True  # the token rate is chosen per call by the query window w

    def __init__(self, codec_conf: dict, source: str = "<config>", chunking: Optional[ChunkingConfig] = None,
                 dtype: Union[str, torch.dtype, None] = None):
        super().__init__()
        from espnet2_almtok.codec.generator import ALMTokenizerGenerator

        params = dict(codec_conf.get("generator_params") or {})
        params["sample_rate"] = int(codec_conf.get("sampling_rate", 16000))
        self.generator = ALMTokenizerGenerator(**params, inference_only=True).eval()
        self.chunking = chunking or ChunkingConfig()
        self.dtype = _as_dtype(dtype)
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Union[str, Path], use_priors: bool = True, context_s: Optional[float] = None,
                    overlap_s: Optional[float] = None, chunk_batch: int = 8, dtype=None) -> "ALMTokenizer":
        """An untrained tokenizer of a training config (tests, benchmarks, shape checks).

        ``use_priors=False`` ignores the config's ``codebook_init`` files (random codebooks).
        ``context_s`` / ``overlap_s`` / ``chunk_batch``: see :class:`ChunkingConfig` (default
        context: the config's training crop).
        """
        conf = _read_config(config)
        codec_conf = dict(conf.get("codec_conf") or {})
        if not use_priors:
            codec_conf["generator_params"] = {**codec_conf.get("generator_params", {}), "codebook_init": None}
        return cls(codec_conf, source=str(config), chunking=_chunking_of(conf, context_s, overlap_s, chunk_batch),
                   dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], model_file: Optional[Union[str, Path]] = None,
                        device: Union[str, torch.device] = "cpu", context_s: Optional[float] = None,
                        overlap_s: Optional[float] = None, chunk_batch: int = 8, dtype=None) -> "ALMTokenizer":
        """Load a trained tokenizer from an ESPnet exp dir or a packed zip (the recipe's or
        ESPnet's pack format). Only the generator's inference weights are read (memory-mapped:
        the discriminator's and the training heads' tensors are never loaded); a packed zip is
        read through a temporary directory that is gone when this returns."""
        if not isinstance(path, (str, Path)):
            raise TypeError(f"from_pretrained takes the path of an exp dir or a packed .zip, got {type(path).__name__}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; give an exp dir or a packed .zip")
        with extracted_model(path, model_file) as (config, weights, shown):
            conf = _read_config(config)
            codec_conf = dict(conf.get("codec_conf") or {})
            # The codebooks are in the weights: the prior .npy files are not needed (nor shipped).
            codec_conf["generator_params"] = {**codec_conf.get("generator_params", {}), "codebook_init": None}
            tok = cls(codec_conf, source=str(path), chunking=_chunking_of(conf, context_s, overlap_s, chunk_batch),
                      dtype=dtype)
            try:
                tok.load_weights(weights)
            except ValueError as e:  # name the file as the user knows it, not its temporary copy
                raise ValueError(str(e).replace(str(weights), shown)) from None
        return tok.to(device)

    def load_weights(self, model_file: Union[str, Path]) -> None:
        """Load the generator's inference weights from an ESPnet model state dict
        (``codec.generator.*`` keys) or a trainer checkpoint; other keys are not read."""
        state = generator_state(load_state_dict(model_file, mmap=True), model_file)
        try:
            self.generator.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ValueError(
                f"{model_file} does not fit the model of {self.source}: it was trained with another "
                f"config (e.g. other widths, layers or codebook size). Use the config.yaml saved "
                f"next to that checkpoint. Details: {' '.join(first[:3])[:600]}") from e

    # ------------------------------------------------------------------ properties
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

    @property
    def num_parameters(self) -> int:
        """Parameters held (the generator's inference parts)."""
        return sum(p.numel() for p in self.parameters())

    def check_window(self, window: int) -> int:
        """``window`` if the model was trained for it, else a ValueError listing the trained ones."""
        return self.generator.check_window(window)

    def token_rate(self, window: int) -> float:
        """Tokens (query positions) per second of audio for window ``w``; each has ``n_q`` codes."""
        return self.generator.frame_rate / self.generator.check_window(window)

    def bitrate(self, window: int) -> float:
        """Bits per second: ``token_rate * n_q * log2(codebook_size)``."""
        return self.token_rate(window) * self.n_q * math.log2(self.codebook_size)

    def set_context(self, context_s: float, overlap_s: Optional[float] = None) -> None:
        """Transformer context (seconds) for long audio; see :class:`ChunkingConfig`."""
        self.chunking = ChunkingConfig(context_s=context_s, overlap_s=overlap_s,
                                       chunk_batch=self.chunking.chunk_batch, crossfade=self.chunking.crossfade)

    def _autocast(self):
        """Autocast to :attr:`dtype` (a no-op for float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

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
            name = f"clip {i}" if len(clips) > 1 else str(wav) if isinstance(wav, (str, Path)) else "input"
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
        with self._autocast():
            codes = self.generator.encode(batch, window, lengths=lengths if len(lengths) > 1 else None, n_q=n_q,
                                          chunking=self.chunking)
        if return_lengths:
            unit = self.generator.hop_length * window
            return codes, (lengths + unit - 1) // unit
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, window: int = 4) -> torch.Tensor:
        """Codes ``(B, n_q', N)`` or ``(n_q', N)`` -> waveform ``(B, N * w * hop)`` at :attr:`sample_rate`."""
        codes = self._as_codes(codes)
        with self._autocast():
            return self.generator.decode(codes, window, chunking=self.chunking).squeeze(1).float()  # views, no copy

    def _as_codes(self, codes) -> torch.Tensor:
        try:
            codes = torch.as_tensor(codes)
        except (TypeError, ValueError, RuntimeError) as e:  # strings, ragged lists, objects
            raise ValueError(f"codes must be an integer array (B, n_q, N) or (n_q, N), as encode() returns; got "
                             f"{type(codes).__name__} that is not one ({str(e).splitlines()[0]})") from None
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if codes.dim() == 3 and (codes.shape[0] == 0 or codes.shape[2] == 0):
            raise ValueError(f"codes of shape {tuple(codes.shape)} hold no token to decode (B, n_q, N with "
                             "B, N >= 1); skip empty utterances before decoding")
        codes = codes.long().to(self.device)
        self.generator.quantizer.check_codes(codes)
        return codes

    # ------------------------------------------------------------------ streaming (one clip)
    @torch.no_grad()
    def encode_source(self, source, window: int = 4, n_q: Optional[int] = None) -> torch.Tensor:
        """One clip of any length, read by sample range from ``source`` (a
        :class:`~espnet2_almtok.codec.streaming.SampleSource` at :attr:`sample_rate`, e.g.
        :class:`~espnet2_almtok.codec.sources.SoundFileSource`) -> codes ``(n_q, N)``.
        Memory is bounded by the context; the codes equal :meth:`encode` of the whole clip."""
        from espnet2_almtok.codec.streaming import encode_long

        window = self.generator.check_window(window)
        n_q = self.generator.quantizer.check_n_q(n_q)
        rate = getattr(source, "sample_rate", self.sample_rate)
        if rate != self.sample_rate:
            raise AudioError(f"{getattr(source, 'name', 'source')}: {rate} Hz, but the model codes {self.sample_rate} Hz "
                             f"audio; resample it first (e.g. `sox in.wav -r {self.sample_rate} out.wav`) or use encode()")
        with self._autocast():
            return encode_long(self.generator, source, window, self.chunking, n_q)

    @torch.no_grad()
    def decode_blocks(self, codes: torch.Tensor, window: int = 4) -> Iterator[torch.Tensor]:
        """Codes ``(n_q', N)`` of one clip -> waveform blocks ``(samples,)`` (float32, on
        :attr:`device`) that concatenate to :meth:`decode`'s ``N * w * hop`` samples."""
        from espnet2_almtok.codec.streaming import decode_long

        window = self.generator.check_window(window)
        codes = self._as_codes(codes)
        if codes.shape[0] != 1:
            raise ValueError(f"decode_blocks takes the codes of one clip (n_q, N), got {tuple(codes.shape)}")
        with self._autocast():
            yield from decode_long(self.generator, codes[0], window, self.chunking)

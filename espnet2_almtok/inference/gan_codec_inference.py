#!/usr/bin/env python3
"""ESPnet's codec inference (``espnet2.bin.gan_codec_inference``) with the almtok codec registered.

    python -m espnet2_almtok.bin.gan_codec_inference --train_config exp/codec_x/config.yaml \\
        --model_file exp/codec_x/valid.mel_loss.best.pth \\
        --data_path_and_name_and_type dump/raw/test/wav.scp,audio,sound --output_dir out --window 8
    python -m espnet2_almtok.bin.gan_codec_inference --model_tag exp/codec_x/almtok_packed.zip ...

ESPnet's parser, :class:`AudioCoding` and outputs (``codec/codec.scp``: one ``.npy`` of shape
``(n_q, 1, N)`` per utterance, ESPnet's stream-first layout; ``wav/<utt>.wav``), with these
differences, all in this module (nothing in ESPnet is patched):

- The task is :class:`ALMTokCodecTask` (``--codec almtok`` beside ESPnet's SoundStream, Encodec,
  DAC and FunCodec), not ``GANCodecTask``.
- ``--window w``: the query window, passed to both encoding and decoding (default: the config's
  ``codec_conf.inference_window``; a window the model was not trained for is refused).
- Long audio is coded in Transformer windows exactly as ``espnet2_almtok.bin.codec_inference``
  does (``--context_seconds``, default the training crop; ``--overlap_seconds``,
  ``--chunk_batch``): the codes equal that tool's for the same model and wav.scp.
- Input audio gets ESPnet's inference preprocessing (first channel of multi-channel audio), not
  the task's training crop (``crop_length``). It must be at the model's rate (stage 2 formats it).
- The resynthesis is trimmed to the input's length.
- Weights: the model is built by ESPnet's ``build_model_from_file`` (the whole GAN model,
  discriminator included, weights loaded with ``strict=False``). So a file with the generator's
  inference weights only (what the recipe's stage 9 packs) loads; the discriminator and the
  training-only heads stay unloaded (not used here). Every generator weight that inference uses
  must be in the file, else it is refused (a trainer ``checkpoint.pth``, for instance: give a
  ``*.pth`` state dict). ``codebook_init`` is ignored (the codebooks are in the weights), so a
  moved exp dir or an unpacked zip loads without the semantic-prior files.
- ``--model_tag``: a local packed zip (ESPnet's pack format, the recipe's stage 9): its config and
  model file only are extracted as ``ALMTokenizer.from_pretrained`` extracts them (member names
  cleaned, nothing outside the zip, sizes capped, each checked against the sha256 recorded at
  packing; not with ESPnet's ``unpack``, which writes members to unchecked paths) into a temporary directory, removed once the model is
  built; other tags go to ``espnet_model_zoo`` as in ESPnet. Without ``--model_file``, the best
  weights beside ``--train_config`` are used (``valid.mel_loss.best.pth``, ...).
"""

import argparse
import copy
import logging
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import soundfile as sf
import torch
from typeguard import typechecked

from espnet2_almtok.inference import positive_int
from espnet2_almtok.startup import import_quietly

_espnet_inference = import_quietly("espnet2.bin.gan_codec_inference")
AudioCoding = _espnet_inference.AudioCoding

from espnet2.fileio.npy_scp import NpyScpWriter  # noqa: E402
from espnet2.gan_codec.dac import DAC  # noqa: E402
from espnet2.gan_codec.soundstream import SoundStream  # noqa: E402
from espnet2.tasks.gan_codec import GANCodecTask  # noqa: E402
from espnet2.torch_utils.device_funcs import to_device  # noqa: E402
from espnet2.torch_utils.set_all_random_seed import set_all_random_seed  # noqa: E402
from espnet2.utils.types import float_or_none  # noqa: E402
from espnet.utils.cli_utils import get_commandline_args  # noqa: E402

from espnet2_almtok.api import _chunking_of, _find_model_file  # noqa: E402
from espnet2_almtok.codec.almtok import ALMTokenizerCodec  # noqa: E402
from espnet2_almtok.codec.generator import TRAINING_ONLY_PREFIXES  # noqa: E402
from espnet2_almtok.tasks.codec import ALMTokCodecTask  # noqa: E402


class ALMTokInferenceTask(ALMTokCodecTask):
    """:class:`ALMTokCodecTask` for inference: an almtok model is built without reading its
    ``codebook_init`` files (the weights loaded next hold the codebooks)."""

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        if getattr(args, "codec", None) == "almtok":
            codec_conf = copy.deepcopy(args.codec_conf or {})
            codec_conf.setdefault("generator_params", {})["codebook_init"] = None
            args = argparse.Namespace(**{**vars(args), "codec_conf": codec_conf})
        return super().build_model(args)


def check_weights(model: torch.nn.Module, model_file: Union[str, Path]) -> None:
    """Refuse ``model_file`` unless it holds every generator weight inference uses (ESPnet's
    loader is ``strict=False`` and would leave missing ones random without a word)."""
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "module" in state:  # as ESPnet's loader reads deepspeed files
        state = state["module"]
    keys = set(state) if isinstance(state, dict) else set()
    prefix = "codec.generator."
    skip = TRAINING_ONLY_PREFIXES if isinstance(model.codec, ALMTokenizerCodec) else ()
    needed = [k for k in model.state_dict() if k.startswith(prefix) and not k[len(prefix):].startswith(skip)]
    missing = [k for k in needed if k not in keys]
    if missing:
        raise ValueError(
            f"{model_file} lacks {len(missing)} of the {len(needed)} generator weights inference uses "
            f"(e.g. {', '.join(missing[:3])}); give a state dict saved by the trainer "
            "(valid.mel_loss.best.pth, latest.pth, <N>epoch.pth; not checkpoint.pth) or a packed model")


class ALMTokAudioCoding(AudioCoding):
    """ESPnet's :class:`AudioCoding` built by :class:`ALMTokInferenceTask`; for an almtok codec,
    ``window`` and the long-audio chunking are passed to both ``encode`` and ``decode``.

    Args (besides ESPnet's): ``window`` (default: the config's ``inference_window``),
    ``context_s`` / ``overlap_s`` / ``chunk_batch`` (see
    :class:`~espnet2_almtok.codec.chunking.ChunkingConfig`; default context: the training crop).
    """

    @typechecked
    def __init__(
        self,
        train_config: Union[Path, str, None] = None,
        model_file: Union[Path, str, None] = None,
        target_bandwidth: Union[Path, str, float, None] = None,
        dtype: str = "float32",
        device: Union[str, torch.device] = "cpu",
        seed: int = 777,
        always_fix_seed: bool = False,
        window: Optional[int] = None,
        context_s: Optional[float] = None,
        overlap_s: Optional[float] = None,
        chunk_batch: int = 8,
    ):
        if train_config is None and model_file is None:
            raise ValueError("give train_config (an exp dir's config.yaml) and/or model_file, or a model_tag")
        if model_file is None:
            model_file = _find_model_file(Path(train_config).parent)
            logging.info(f"model file: {model_file} (the best found beside {train_config})")
        model, train_args = ALMTokInferenceTask.build_model_from_file(train_config, model_file, device)
        check_weights(model, model_file)
        model.to(dtype=getattr(torch, dtype)).eval()
        self.device = device
        self.dtype = dtype
        self.train_args = train_args
        self.model = model
        self.codec = model.codec
        # ESPnet's inference preprocessing: not the task's training crop
        self.preprocess_fn = GANCodecTask.build_preprocess_fn(train_args, False)
        self.seed = seed
        self.always_fix_seed = always_fix_seed

        decode_conf: Dict[str, Any] = {}
        if isinstance(self.codec, (SoundStream, DAC)):
            decode_conf.update(target_bw=target_bandwidth)
        if isinstance(self.codec, ALMTokenizerCodec):
            window = self.codec.generator.check_window(window or self.codec.inference_window)
            chunking = _chunking_of(vars(train_args), context_s, overlap_s, chunk_batch)
            decode_conf.update(window=window, chunking=chunking)
        elif window is not None:
            logging.warning(f"--window {window} ignored: codec '{train_args.codec}' has a fixed token rate")
        self.decode_conf = decode_conf

    def _decode(self, codes: torch.Tensor, cfg: Dict[str, Any]) -> torch.Tensor:
        if isinstance(self.codec, ALMTokenizerCodec):
            return self.codec.decode(codes, window=cfg["window"], chunking=cfg["chunking"])
        return self.model.decode(codes)

    @torch.no_grad()
    @typechecked
    def __call__(
        self,
        audio: Union[torch.Tensor, np.ndarray, None] = None,
        decode_conf: Optional[Dict[str, Any]] = None,
        encode_only: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Audio ``(T,)`` -> ``{"codes": (n_q, 1, N), "resyn_audio": (T,)}`` (ESPnet's keys)."""
        assert audio is not None, "Audio is invalid, input a valid audio."
        audio = to_device(torch.as_tensor(audio), self.device)
        cfg = {**self.decode_conf, **(decode_conf or {})}
        if self.always_fix_seed:
            set_all_random_seed(self.seed)
        codes = self.model.encode(audio, **cfg)
        output = dict(codes=codes)
        if encode_only:
            return output
        resyn = self._decode(codes, cfg)
        if audio.dim() == 1:
            resyn = resyn.reshape(-1)[: audio.shape[0]]
        output.update(resyn_audio=resyn)
        return output

    @torch.no_grad()
    @typechecked
    def decode(self, codes: Union[torch.Tensor, np.ndarray, None] = None) -> Dict[str, torch.Tensor]:
        """Codes ``(n_q, B, N)`` -> ``{"resyn_audio": (B, 1, N * w * hop)}`` at this window."""
        assert codes is not None, "Codes are invalid, input a valid one"
        codes = to_device(torch.as_tensor(codes), self.device)
        if self.always_fix_seed:
            set_all_random_seed(self.seed)
        return dict(resyn_audio=self._decode(codes, self.decode_conf))

    @staticmethod
    def from_pretrained(model_tag: Optional[str] = None, **kwargs: Optional[Any]) -> "ALMTokAudioCoding":
        """Build from a packed zip (a local path; unpacked into a temporary directory that is
        removed once the model is built) or an ``espnet_model_zoo`` tag; else from ``kwargs``."""
        if model_tag is None:
            return ALMTokAudioCoding(**kwargs)
        if Path(model_tag).is_file() and zipfile.is_zipfile(model_tag):
            from espnet2_almtok.api import extracted_model

            # Not ESPnet's unpack, which writes every member meta.yaml lists to ``outpath / name``
            # with the name unchecked ("../.." or an absolute path write anywhere): the config and
            # the model file only, as from_pretrained extracts them (names cleaned, members of the
            # zip only, sizes capped, sha256 checked), into a directory removed once built.
            with extracted_model(Path(model_tag), kwargs.pop("model_file", None)) as (config, weights, _):
                kwargs.update(train_config=str(config), model_file=str(weights))
                return ALMTokAudioCoding(**kwargs)
        try:
            from espnet_model_zoo.downloader import ModelDownloader
        except ImportError:
            raise ValueError(f"--model_tag {model_tag} is not a local packed .zip, and espnet_model_zoo "
                             "(for model zoo tags) is not installed") from None
        kwargs.update(**ModelDownloader().download_and_unpack(model_tag))
        return ALMTokAudioCoding(**kwargs)


def inference(output_dir: str, batch_size: int, dtype: str, ngpu: int, seed: int, num_workers: int,
              log_level: Union[int, str], data_path_and_name_and_type, key_file: Optional[str],
              train_config: Optional[str], model_file: Optional[str], model_tag: Optional[str],
              target_bandwidth: Optional[float], encode_only: bool, always_fix_seed: bool,
              allow_variable_data_keys: bool, window: Optional[int] = None, context_seconds: Optional[float] = None,
              overlap_seconds: Optional[float] = None, chunk_batch: int = 8):
    """ESPnet's ``inference`` loop with :class:`ALMTokAudioCoding`."""
    if batch_size > 1:
        raise NotImplementedError("batch decoding is not implemented (as in ESPnet)")
    if ngpu > 1:
        raise NotImplementedError("only single GPU decoding is supported")
    logging.basicConfig(level=log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    device = "cuda" if ngpu >= 1 else "cpu"
    set_all_random_seed(seed)
    audio_coding = ALMTokAudioCoding.from_pretrained(
        model_tag=model_tag, train_config=train_config, model_file=model_file, target_bandwidth=target_bandwidth,
        dtype=dtype, device=device, seed=seed, always_fix_seed=always_fix_seed, window=window,
        context_s=context_seconds, overlap_s=overlap_seconds, chunk_batch=chunk_batch)
    if "window" in audio_coding.decode_conf:
        logging.info(f"window w={audio_coding.decode_conf['window']}, context "
                     f"{audio_coding.decode_conf['chunking'].context_s:.2f} s")
    loader = ALMTokInferenceTask.build_streaming_iterator(
        data_path_and_name_and_type, dtype=dtype, batch_size=batch_size, key_file=key_file,
        num_workers=num_workers, preprocess_fn=audio_coding.preprocess_fn,
        collate_fn=GANCodecTask.build_collate_fn(audio_coding.train_args, False),
        allow_variable_data_keys=allow_variable_data_keys, inference=True)

    from espnet2_almtok.recipe.kaldi_dir import check_utt_ids, read_table

    for path, _, kind in data_path_and_name_and_type:  # the ids name the output files: none may leave output_dir
        table = read_table(Path(path))
        check_utt_ids(table, str(path))
        if kind == "sound":  # ESPnet's loader does not resample: another rate would be coded as the model's
            import soundfile

            for utt, spec in table.items():
                if spec.rstrip().endswith("|") or not Path(spec).is_file():
                    continue
                rate = soundfile.info(spec).samplerate
                if rate != audio_coding.fs:
                    raise ValueError(f"{path}: utterance {utt} ({spec}) is {rate} Hz, the model codes {audio_coding.fs} Hz "
                                     "audio: resample it (the recipe's stage 2, or sox in.wav -r "
                                     f"{audio_coding.fs} out.wav), or use bin/codec_inference, which resamples")
    out = Path(output_dir)
    (out / "codec").mkdir(parents=True, exist_ok=True)
    if not encode_only:
        (out / "wav").mkdir(parents=True, exist_ok=True)
    with NpyScpWriter(out / "codec", out / "codec" / "codec.scp") as codec_writer:
        for keys, batch in loader:
            assert isinstance(batch, dict), type(batch)
            batch = {k: v[0] for k, v in batch.items() if not k.endswith("_lengths")}
            start = time.perf_counter()
            output = audio_coding(**batch, encode_only=encode_only)
            key = keys[0]
            if output.get("resyn_audio") is not None:
                wav = output["resyn_audio"]
                logging.info(f"{key}: {batch['audio'].shape[0]} -> {wav.shape[0]} samples, "
                             f"{wav.shape[0] / (time.perf_counter() - start):.1f} points / sec")
                sf.write(out / "wav" / f"{key}.wav", wav.float().cpu().numpy(), audio_coding.fs, "PCM_16")
            codec_writer[key] = output["codes"].cpu().numpy()


def get_parser() -> argparse.ArgumentParser:
    """ESPnet's parser plus ``--window``, ``--context_seconds``, ``--overlap_seconds``, ``--chunk_batch``."""
    parser = _espnet_inference.get_parser()
    parser.description = "Codec inference (ESPnet's, with the almtok codec registered)"
    group = parser.add_argument_group("ALMTokenizer")
    group.add_argument("--window", type=int, default=None,
                       help="query window w, for encoding and decoding; None: the config's inference_window")
    group.add_argument("--context_seconds", type=float_or_none, default=None,
                       help="seconds one Transformer pass attends; None: the training crop")
    group.add_argument("--overlap_seconds", type=float_or_none, default=None,
                       help="context on each side of a window's kept tokens; None: context / 6")
    group.add_argument("--chunk_batch", type=positive_int, default=8, help="Transformer windows per pass")
    return parser


def main(cmd=None):
    print(get_commandline_args(), file=sys.stderr)
    args = get_parser().parse_args(cmd)
    kwargs = vars(args)
    kwargs.pop("config", None)
    inference(**kwargs)


if __name__ == "__main__":
    main()

"""Independent judges of (resynthesised or synthesised) audio: models nobody in this project trained.

- :class:`SphinxASR`: English ASR with the acoustic model, language model and dictionary that
  ship inside the ``pocketsphinx`` wheel -> lower-case words; :func:`asr_error_rates` scores it
  against transcripts (WER/CER in %, :func:`espnet2_almtok.lm.metrics.error_rates`: lower case,
  punctuation removed except apostrophes, on both sides).
- :class:`DNSMOS`: Microsoft's DNSMOS P.835 (``sig``/``bak``/``ovrl``) and P.808 MOS, the ONNX
  models inside the ``speechmos`` wheel.
- :class:`SpeakerSimilarity` (optional): cosine similarity of x-vectors from a local
  HuggingFace ``*ForXVector`` directory (e.g. ``microsoft/wavlm-base-plus-sv`` downloaded by
  the user), loaded from safetensors only.

Each judge loads its model once; call it once per clip. Inputs are mono waveforms ``(T,)``
(numpy or torch, float in [-1, 1]) with their sample rate; they are resampled to 16 kHz.
:func:`build_judges` turns a ``--judges`` string (``asr,dnsmos,spk`` / ``none``) into judges,
naming the missing package (and ``--judges none``) when one is not installed.

UTMOS is not among them: its released checkpoints are pickled Lightning files that need
``fairseq`` and an unsafe ``torch.load``; no safe, self-contained local model format exists.
"""

import logging
import math
import re
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from espnet2_almtok.audio import resample, to_mono_tensor
from espnet2_almtok.lm.metrics import error_rates

FS = 16000
JUDGE_NAMES = ("asr", "dnsmos", "spk")
Waveform = Union[np.ndarray, torch.Tensor]


class JudgeUnavailable(ImportError):
    """A judge's package is not installed; the message names it and the way out."""


def _require(module: str, judge: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise JudgeUnavailable(
            f"the {judge!r} judge needs the Python package `{pip_name}` ({e}); install it "
            f"(`pip install {pip_name}`), leave the judge out of --judges, or use --judges none") from e


def to_16k(wav: Waveform, sr: int, name: str = "input") -> np.ndarray:
    """Mono waveform ``(T,)`` (or ``(T, C)``/``(C, T)``) at ``sr`` Hz -> float32 ``(T',)`` at
    16 kHz, clipped to [-1, 1] (resampling can overshoot full scale)."""
    wav = to_mono_tensor(wav, name).float()
    if not torch.isfinite(wav).all():
        raise ValueError(f"{name}: the audio contains NaN or inf samples; the judges cannot score it")
    if wav.numel() and sr != FS:
        wav = resample(wav, sr, FS, name)
    return wav.clamp(-1.0, 1.0).numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- ASR
class SphinxASR:
    """English ASR with pocketsphinx's bundled US-English models (``pocketsphinx.get_model_path()``:
    ``en-us/en-us`` acoustic model, ``en-us/en-us.lm.bin`` 3-gram LM, ``cmudict-en-us.dict``).

    Each clip is decoded as a whole utterance (``full_utt``: cepstral mean normalisation over the
    clip) by a freshly initialised front end with the initial CMN, so a transcript does not depend
    on the clips decoded before it. Speed: about 0.4 s per audio second on this project's shared
    2-core CPU. Console logging is off (``loglevel=FATAL``)."""

    def __init__(self, hmm: Optional[str] = None, lm: Optional[str] = None, dictionary: Optional[str] = None):
        ps = _require("pocketsphinx", "asr", "pocketsphinx")
        self.config = ps.Config(hmm=hmm or ps.get_model_path("en-us/en-us"),
                                lm=lm or ps.get_model_path("en-us/en-us.lm.bin"),
                                dict=dictionary or ps.get_model_path("en-us/cmudict-en-us.dict"),
                                samprate=FS, loglevel="FATAL")
        self.decoder = ps.Decoder(self.config)
        self._cmn_init = self.decoder.get_cmn(False)

    def __call__(self, wav: Waveform, sr: int = FS, name: str = "input") -> str:
        """Waveform ``(T,)`` at ``sr`` Hz -> recognised words, lower case, space-separated
        (``""`` for silence, noise or an empty clip)."""
        x = to_16k(wav, sr, name)
        if x.size == 0:
            return ""
        pcm = (x * 32767.0).round().astype("<i2").tobytes()
        self.decoder.reinit_feat()  # fresh front end: the result does not depend on earlier clips
        self.decoder.set_cmn(self._cmn_init)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        words = hyp.hypstr.split() if hyp is not None else []
        # fillers (<sil>, [noise], ...) never belong in a transcript
        return " ".join(w.lower() for w in words if not re.fullmatch(r"<.*>|\[.*\]|\+\+.*\+\+", w))


def asr_error_rates(refs: Dict[str, str], hyps: Dict[str, str]) -> Tuple[Dict[str, float], Dict[str, Dict]]:
    """Transcripts ``{utt: text}`` vs ASR output ``{utt: words}`` (a missing one counts as empty)
    -> (corpus ``wer``/``cer`` in % = total errors / total reference words (characters), and
    ``n``; per utterance ``{utt: {wer, cer, ref, hyp}}``). Both sides are normalised the same
    way (:func:`~espnet2_almtok.lm.metrics.normalize_text`)."""
    corpus, rows = error_rates(refs, hyps)
    return corpus, {row["utt"]: row for row in rows}


# -------------------------------------------------------------------------------------- DNSMOS
class DNSMOS:
    """DNSMOS P.835 + P.808 (``speechmos``'s ONNX models; 16 kHz) of one clip ->
    ``{dnsmos_ovrl, dnsmos_sig, dnsmos_bak, dnsmos_p808}`` (MOS, 1-5).

    DNSMOS scores 9.01 s windows (hop 1 s) and averages them. A clip shorter than one window is
    tiled cyclically to exactly one window (the reference script doubles it until it is at least
    one window long and scores every 1 s hop of that: the same content at other offsets, up to
    9x the work; the scores agree within ~0.01 on 1-4 s speech). Clips shorter than
    ``min_seconds`` (tiled 18+ times they are a loop DNSMOS never saw) get NaN and a warning.
    Speed: about 0.2-0.3 s per audio second (one window per second of audio, one per
    clip under 9 s) on this project's shared 2-core CPU."""

    keys = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")

    def __init__(self, personalized: bool = False, min_seconds: float = 0.5):
        _require("onnxruntime", "dnsmos", "onnxruntime")
        _require("librosa", "dnsmos", "librosa")
        mod = _require("speechmos.dnsmos", "dnsmos", "speechmos")
        import os

        base = os.path.dirname(os.path.abspath(mod.__file__))
        primary = os.path.join(base, "pdnsmos_models" if personalized else "dnsmos_models", "sig_bak_ovr.onnx")
        self.model = mod.DNSMOS(primary, os.path.join(base, "dnsmos_models", "model_v8.onnx"))
        self.window = int(mod.INPUT_LENGTH * FS)
        self.personalized, self.min_seconds = personalized, min_seconds

    def __call__(self, wav: Waveform, sr: int = FS, name: str = "input") -> Dict[str, float]:
        x = to_16k(wav, sr, name)
        if x.size < self.min_seconds * FS:
            logging.warning(f"{name}: {x.size / FS:.2f} s is shorter than DNSMOS's {self.min_seconds} s "
                            "minimum here; its dnsmos_* scores are NaN")
            return {k: math.nan for k in self.keys}
        if x.size < self.window:
            x = np.resize(x, self.window)  # cyclic tiling to one window
        r = self.model(x, FS, self.personalized)
        return dict(dnsmos_ovrl=float(r["ovrl_mos"]), dnsmos_sig=float(r["sig_mos"]),
                    dnsmos_bak=float(r["bak_mos"]), dnsmos_p808=float(r["p808_mos"]))


# ---------------------------------------------------------------------------- speaker similarity
class SpeakerSimilarity:
    """Cosine similarity of two clips' x-vectors from a local HuggingFace ``*ForXVector`` model
    (``AutoModelForAudioXVector``: WavLM / wav2vec2 / UniSpeech-SAT / data2vec x-vector heads).

    ``model_dir`` holds ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``
    (e.g. ``huggingface-cli download microsoft/wavlm-base-plus-sv --local-dir DIR``). Loading is
    offline, from safetensors only, with no remote code. Clips shorter than ``min_seconds`` (too
    few frames for the TDNN head) give NaN and a warning."""

    def __init__(self, model_dir, device: str = "cpu", min_seconds: float = 0.5):
        from pathlib import Path

        transformers = _require("transformers", "spk", "transformers")
        model_dir = Path(model_dir)
        for f in ("config.json", "preprocessor_config.json"):
            if not (model_dir / f).is_file():
                raise FileNotFoundError(f"--spk_model {model_dir}: no {f}; give a local HuggingFace "
                                        "*ForXVector directory (e.g. microsoft/wavlm-base-plus-sv)")
        try:
            self.model = transformers.AutoModelForAudioXVector.from_pretrained(
                model_dir, use_safetensors=True, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"--spk_model {model_dir}: cannot load an x-vector model from safetensors ({e}); "
                               "the directory needs model.safetensors (convert a pytorch_model.bin with "
                               "`save_pretrained(..., safe_serialization=True)`) and an *ForXVector config") from e
        self.model.eval().to(device)
        self.extractor = transformers.AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        self.fs = int(self.extractor.sampling_rate)
        self.device, self.min_seconds = device, min_seconds

    @torch.no_grad()
    def embed(self, wav: Waveform, sr: int = FS, name: str = "input") -> Optional[torch.Tensor]:
        """Waveform ``(T,)`` at ``sr`` Hz -> x-vector ``(D,)``; None when shorter than ``min_seconds``."""
        x = to_mono_tensor(wav, name).float()
        if x.numel() and sr != self.fs:
            x = resample(x, sr, self.fs, name)
        if x.numel() < self.min_seconds * self.fs:
            logging.warning(f"{name}: {x.numel() / self.fs:.2f} s is too short for the x-vector model "
                            f"(minimum {self.min_seconds} s); speaker similarity is NaN")
            return None
        feats = self.extractor(x.numpy(), sampling_rate=self.fs, return_tensors="pt")
        # one unpadded clip: the attention mask would be all ones
        return self.model(input_values=feats["input_values"].to(self.device)).embeddings[0].float().cpu()

    def __call__(self, a: Waveform, b: Waveform, sr: int = FS, name: str = "input") -> float:
        """Cosine similarity in [-1, 1] of clips ``a`` and ``b`` (both ``(T,)`` at ``sr`` Hz)."""
        ea, eb = self.embed(a, sr, name), self.embed(b, sr, name)
        if ea is None or eb is None:
            return math.nan
        return float(torch.nn.functional.cosine_similarity(ea, eb, dim=0).clamp(-1.0, 1.0))


# ------------------------------------------------------------------------------------ --judges
def parse_judges(spec: str) -> List[str]:
    """``"asr,dnsmos"`` -> ``["asr", "dnsmos"]``; ``"none"`` or ``""`` -> ``[]``."""
    names = [n.strip().lower() for n in (spec or "").split(",") if n.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in JUDGE_NAMES]
    if bad:
        raise ValueError(f"--judges {spec!r}: unknown judge(s) {bad}; choose from {','.join(JUDGE_NAMES)} or none")
    return list(dict.fromkeys(names))


def build_judges(names: Iterable[str], spk_model=None) -> Dict[str, object]:
    """Judge names (:func:`parse_judges`) -> ``{name: judge}`` (models loaded once)."""
    names = list(names)
    if "spk" in names and not spk_model:
        raise ValueError("the spk judge needs --spk_model DIR (a local HuggingFace *ForXVector model, "
                         "e.g. microsoft/wavlm-base-plus-sv); or drop spk from --judges")
    makers = {"asr": SphinxASR, "dnsmos": DNSMOS, "spk": lambda: SpeakerSimilarity(spk_model)}
    return {n: makers[n]() for n in names}


def is_english(lang: Optional[str]) -> bool:
    """``en``, ``eng``, ``en-US``, ``en_gb``, ``english`` -> True."""
    return bool(lang) and re.split(r"[-_]", lang.strip().lower())[0] in ("en", "eng", "english")

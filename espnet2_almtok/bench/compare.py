#!/usr/bin/env python3
"""Equal-budget comparison on real audio, scored by judges nobody here trained.

    python -m espnet2_almtok.bin.compare --data_dir egs2/almtok/codec1/dump/raw \\
        --budget_minutes 5 --output_dir docs/compare            # the recorded run (see README)
    python -m espnet2_almtok.bin.compare --data_dir ... --output_dir /tmp/cmp --quick   # smoke run

Systems (``conf/benchmark/*.yaml``, generators of comparable size, 16 kHz):

- ``almtok``: ALMTokenizer as the recipe trains it: semantic priors (k-means of s3prl MFCCs of
  the training audio, frozen), stage 1 with the MAE and AR (RVQ depth) losses for 75 % of the
  budget, stage 2 (clean reconstruction fine-tune, token side frozen as ``run.sh``'s
  ``--stage2_freeze_param``) for the rest; scored at w = 2, 4, 8;
- ablations of it: ``almtok_no_mae``, ``almtok_no_ar``, ``almtok_no_priors`` (random, learned
  codebooks), ``almtok_single_stage`` (stage 1 for the whole budget);
- ``almtok_shortcut``: ``almtok`` with ``generator_params.query_shortcut`` (ours, not the
  paper's: each query's own frames reach it, and it reaches its mask slots, without attention),
  and two ablations of it: ``almtok_shortcut_no_priors``, ``almtok_shortcut_no_mae``;
- ``almtok_shortcut_mae_separate``: ``almtok_shortcut`` with ``generator_params.mae_pass:
  separate`` (ours: tokens and resynthesis from the clean encoder pass, the MAE loss from a
  second, masked one), its ablation ``almtok_shortcut_mae_separate_no_priors``, and
  ``almtok_mae_separate``, the same without the shortcut;
- ESPnet's ``soundstream``, ``encodec`` and ``dac`` at their lowest bitrate (one codebook);
  ``dac`` diverges, and ``dac_lr1e-4`` (Descript's lr) too; ``dac_commit`` (and at lr 1e-4,
  ``dac_commit_lr1e-4``): DAC without its quantization loss, whose gradient in ESPnet cancels
  the commitment loss's; it trains stably.

Every system gets the same budget of *CPU time* (``--budget_minutes`` x the torch threads,
one by default: on an idle core that is the same wall-clock time, and unlike wall time it
stays fair when other jobs share the machine; with several threads, OpenMP spin-waits on a
busy machine would burn CPU time without progress, so run one system per core instead), the
same random crops of the training set (``--train_batch`` x ``--train_seconds``), the same
optimiser (Adam, lr ``--lr``, except a system defined with its own: ``*_lr1e-4``) and seed.
``--seed`` sets the initial weights, crops and probe; ``--data_seed`` the sampled clips, so
runs with other seeds are scored on the same clips. Scored on the test set: mel and STFT
distance, PESQ-wb, STOI (all utterances); pocketsphinx WER and DNSMOS of the resynthesis on the English test speech (the
original audio's figures, the ceiling, beside them). Each base codec is also scored untrained
(at its middle setting), to show that training moved it. A CTC character probe on each system's frozen tokens (train:
English train prompts; test: the English test prompts, whose texts never occur in training)
measures what the tokens say. The training curve is the mel distance on fixed dev clips
after each of ``--curve_points`` chunks of the budget.

Two phases, each resumable after a kill (finished systems are kept; delete their records to
redo them): training saves each system's weights and curve under ``--work_dir`` (``models/``,
``trained/``; not for the repo), then scoring writes ``systems/<name>.json`` and, in
``--output_dir``, ``results.json``, ``results.md``, ``quality_vs_bitrate.png`` and
``training_curves.png``.
"""

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml
from espnet2_almtok.progress import progress

from espnet2_almtok.startup import import_quietly
from espnet2_almtok.code_usage import code_usage
from espnet2_almtok.code_usage import describe as describe_usage
from espnet2_almtok.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
FS = 16000


@dataclass
class System:
    """One trained tokenizer of the comparison."""

    config: str  # conf/benchmark/<config>.yaml
    priors: bool = False  # ALMTokenizer: frozen MFCC k-means codebooks
    two_stage: bool = False  # ALMTokenizer: stage 2 for the last quarter of the budget
    overrides: Dict = field(default_factory=dict)  # codec_conf keys
    generator_overrides: Dict = field(default_factory=dict)  # codec_conf.generator_params keys
    settings: Optional[Sequence[str]] = None  # scored settings (None: the lowest bitrate)
    untrained_baseline: bool = False  # also score the untrained model
    lr: Optional[float] = None  # Adam lr of this system (None: the comparison's --lr)
    note: str = ""


ALMTOK_SETTINGS = ("w=2", "w=4", "w=8")
SYSTEMS = {
    "almtok": System("almtok", priors=True, two_stage=True, settings=ALMTOK_SETTINGS,
                     untrained_baseline=True, note="priors + MAE + AR, two stages"),
    "almtok_no_mae": System("almtok", priors=True, two_stage=True, overrides={"use_mae_loss": False},
                            settings=("w=4",), note="ablation: no MAE loss"),
    "almtok_no_ar": System("almtok", priors=True, two_stage=True, overrides={"use_ar_loss": False},
                           settings=("w=4",), note="ablation: no AR loss"),
    "almtok_no_priors": System("almtok", priors=False, two_stage=True, settings=("w=4",),
                               note="ablation: random learned codebooks"),
    "almtok_single_stage": System("almtok", priors=True, two_stage=False, settings=("w=4",),
                                  note="ablation: stage 1 only"),
    "soundstream": System("soundstream", untrained_baseline=True, note="ESPnet, 1 codebook"),
    "encodec": System("encodec", untrained_baseline=True, note="ESPnet, 1 codebook"),
    "dac": System("dac", untrained_baseline=True, note="ESPnet, 1 codebook"),
}
# at the comparison's lr 5e-4 DAC diverges (commitment loss unbounded after ~270 steps); at
# Descript's own lr (descript-audio-codec's AdamW lr 1e-4) it diverges too, more slowly. Why:
# ESPnet's DAC takes its quantization loss on the straight-through output, so its gradient
# cancels the commitment loss's and nothing holds the encoder output near the codes
# (test_compare checks this); without it, the commitment loss pulls as in SoundStream/Encodec
SYSTEMS["dac_lr1e-4"] = replace(SYSTEMS["dac"], lr=1e-4, note="ESPnet, 1 codebook, lr 1e-4 (Descript's)")
SYSTEMS["dac_commit"] = replace(SYSTEMS["dac"], overrides={"lambda_quantization": 0.0},
                                note="ESPnet, 1 codebook, lambda_quantization 0 (the commitment loss acts)")
SYSTEMS["dac_commit_lr1e-4"] = replace(SYSTEMS["dac_commit"], lr=1e-4,
                                       note="ESPnet, 1 codebook, lambda_quantization 0, lr 1e-4")
# almtok and two of its ablations again with generator_params.query_shortcut (ours: codec/query.py)
for _base, _note in (("almtok", "ours: + query_shortcut (codec/query.py)"),
                     ("almtok_no_priors", "ablation of almtok_shortcut: random learned codebooks"),
                     ("almtok_no_mae", "ablation of almtok_shortcut: no MAE loss")):
    SYSTEMS[_base.replace("almtok", "almtok_shortcut", 1)] = replace(
        SYSTEMS[_base], generator_overrides={"query_shortcut": True}, note=_note)
# the working system: almtok with both of our options, and its ablations
_SHORTCUT_MAE_SEPARATE = {"query_shortcut": True, "mae_pass": "separate"}
SYSTEMS["almtok_shortcut_mae_separate"] = replace(
    SYSTEMS["almtok"], generator_overrides=_SHORTCUT_MAE_SEPARATE,
    note="ours: almtok_shortcut with the MAE loss on a second, masked encoder pass (mae_pass: separate)")
for _base, _what in (("almtok_no_priors", "random learned codebooks"), ("almtok_no_ar", "no AR loss"),
                     ("almtok_single_stage", "stage 1 only")):
    SYSTEMS[_base.replace("almtok", "almtok_shortcut_mae_separate", 1)] = replace(
        SYSTEMS[_base], generator_overrides=_SHORTCUT_MAE_SEPARATE,
        note=f"ablation of almtok_shortcut_mae_separate: {_what}")
SYSTEMS["almtok_mae_separate"] = replace(
    SYSTEMS["almtok"], untrained_baseline=False, generator_overrides={"mae_pass": "separate"},
    note="ours: almtok (the paper's layout) with the MAE loss on a second, masked encoder pass")
PROBE_SETTING = {"almtok": "w=4"}  # ALMTokenizer's probe setting; others: their lowest bitrate


# ------------------------------------------------------------------------------------- data
@dataclass
class Clip:
    utt: str
    wav: torch.Tensor  # (T,) at 16 kHz
    text: str
    category: str
    lang: str


def load_dir(data_dir: Path, max_utts: int = 0, seed: int = 0) -> List[Clip]:
    """A Kaldi data dir (``wav.scp`` + optional ``text``, ``utt2category``, ``utt2lang``) at 16 kHz."""
    from espnet2_almtok.audio import read_audio, resample, to_mono_tensor
    from espnet2_almtok.recipe.kaldi_dir import read_table

    if not (data_dir / "wav.scp").is_file():
        raise FileNotFoundError(f"{data_dir}/wav.scp not found: prepare and format the corpus first "
                                "(egs2/almtok/codec1/run.sh --corpus asterisk --stop_stage 2)")
    wavs = read_table(data_dir / "wav.scp")
    text, cat, lang = (read_table(data_dir / n) for n in ("text", "utt2category", "utt2lang"))
    utts = sorted(wavs)
    if max_utts and len(utts) > max_utts:
        utts = sorted(random.Random(seed).sample(utts, max_utts))
    out = []
    for utt in progress(utts, desc=f"load {data_dir.name}", unit="utt"):
        wav, sr = read_audio(wavs[utt], utt)
        out.append(Clip(utt, resample(to_mono_tensor(wav, utt), sr, FS, utt), text.get(utt, ""),
                        cat.get(utt, "speech"), lang.get(utt, "en")))
    if not out:
        raise ValueError(f"{data_dir}/wav.scp lists no utterances")
    return out


def english_speech(clips: List[Clip]) -> List[Clip]:
    return [c for c in clips if c.category == "speech" and c.lang == "en" and c.text.strip()]


def scored_test_clips(test: List[Clip], max_others: int, data_seed: int) -> List[Clip]:
    """Every English speech prompt of ``test`` (WER, probe) plus ``max_others`` of the rest drawn
    with ``data_seed``, in their original order."""
    english = {c.utt for c in english_speech(test)}
    others = [c for c in test if c.utt not in english]
    keep = english | {c.utt for c in random.Random(data_seed).sample(others, min(len(others), max_others))}
    return [c for c in test if c.utt in keep]


class CropSampler:
    """Random ``seconds``-long crops (zero-padded when shorter), ``batch`` at a time, seeded."""

    def __init__(self, clips: List[Clip], batch: int, seconds: float, seed: int):
        self.clips, self.batch, self.n = clips, batch, int(seconds * FS)
        self.rng = random.Random(seed)

    def __call__(self) -> torch.Tensor:
        rows = []
        for _ in range(self.batch):
            wav = self.clips[self.rng.randrange(len(self.clips))].wav
            if wav.numel() < self.n:
                wav = torch.nn.functional.pad(wav, (0, self.n - wav.numel()))
            start = self.rng.randrange(wav.numel() - self.n + 1)
            rows.append(wav[start: start + self.n])
        return torch.stack(rows)


# ------------------------------------------------------------------------------------- judges
class Judges:
    """Independent judges (models shipped in their wheels): pocketsphinx ASR and DNSMOS."""

    def __init__(self):
        from espnet2_almtok.recipe.judges import DNSMOS, SphinxASR

        self.asr, self.mos = SphinxASR(), DNSMOS()

    def transcribe(self, wav: torch.Tensor) -> str:
        return self.asr(wav, FS)

    def dnsmos(self, wav: torch.Tensor) -> float:
        return float(self.mos(wav, FS)["dnsmos_ovrl"])


def wer(refs: Dict[str, str], hyps: Dict[str, str]) -> float:
    from espnet2_almtok.lm.metrics import error_rates

    return error_rates(refs, hyps)[0]["wer"]


def score_outputs(outputs: Dict[str, torch.Tensor], test: List[Clip], judges: Judges) -> Dict[str, float]:
    """Resyntheses ``{utt: (T,)}`` of ``test`` -> mean mel/STFT distance, PESQ, STOI (all clips),
    pocketsphinx WER and DNSMOS (English speech)."""
    from espnet2_almtok.recipe.score import Scorer, average

    scorer = Scorer(FS)
    rows = [scorer(c.wav, outputs[c.utt][: c.wav.numel()]) for c in test]
    res = {m: v["mean"] for m, v in average(rows).items()}
    en = english_speech(test)
    res["wer"] = wer({c.utt: c.text for c in en}, {c.utt: judges.transcribe(outputs[c.utt]) for c in en})
    res["dnsmos"] = float(np.nanmean([judges.dnsmos(outputs[c.utt]) for c in en]))
    return res


# ------------------------------------------------------------------------------------- systems
def build(system: System, args, prior_files: Optional[List[str]], prior_dim: int):
    from espnet2_almtok.bench.adapters import CodecUnderTest

    conf = yaml.safe_load((args.config_dir / f"{system.config}.yaml").read_text())
    cc = conf["codec_conf"]
    cc.update(system.overrides)
    cc["generator_params"].update(system.generator_overrides)
    if system.config == "almtok":
        gp = cc["generator_params"]
        if system.priors:
            gp.update(codebook_init=prior_files, codebook_dim=prior_dim, codebook_frozen=True)
        else:
            gp.update(codebook_init=None, codebook_frozen=False)
    digest = hashlib.sha256(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:10]
    path = args.work_dir / "configs" / f"{system.config}_{digest}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(conf, sort_keys=False))
    torch.manual_seed(args.seed)
    return CodecUnderTest(system.config, path, "cpu")


def settings_of(cut, system: System):
    if system.settings:
        by_label = {s.label: s for s in cut.settings}
        return [by_label[label] for label in system.settings]
    return [min(cut.settings, key=lambda s: s.bitrate)]


def resynthesize(cut, setting, clips: List[Clip]) -> Dict[str, torch.Tensor]:
    return {c.utt: cut.decode(cut.encode(c.wav.view(1, 1, -1), setting), setting).view(-1) for c in clips}


def dev_mel(cut, setting, dev: List[Clip]) -> float:
    from espnet2_almtok.recipe.score import Scorer

    scorer = Scorer(FS)
    outs = resynthesize(cut, setting, dev)
    return float(np.mean([scorer.mel_distance(c.wav, outs[c.utt][: c.wav.numel()]) for c in dev]))


def freeze_stage2(codec) -> List[str]:
    """Freeze as ``run.sh``'s default ``--stage2_freeze_param`` and turn the semantic losses off."""
    text = (ROOT / "egs2" / "almtok" / "codec1" / "run.sh").read_text()
    prefixes = re.search(r'^stage2_freeze_param="([^"]*)"', text, re.M).group(1).split()
    for t in (p[len("codec."):] for p in prefixes):
        for k, p in codec.named_parameters():
            if k.startswith(t + ".") or k == t:
                p.requires_grad = False
    codec.use_mae_loss = codec.use_ar_loss = False
    return prefixes


def probe_codes(name: str, system: System, trained: Dict, data: Dict, args, priors):
    """The trained system's tokens of the probe's utterances at its probe setting, cached in
    ``work_dir/probe_codes/<name>.pt`` (plain tensors and strings: loaded with weights_only=True)."""
    from espnet2_almtok.bench.probe import ProbeExample

    cache = args.work_dir / "probe_codes" / f"{name}.pt"
    key = {"model": trained["model"], "steps": trained["budget"]["steps"],
           "train": [c.utt for c in data["probe_train"]], "test": [c.utt for c in data["probe_test"]]}

    def unpack(saved):
        return ([ProbeExample(c, t) for c, t in zip(saved["train_codes"], saved["train_text"])],
                [ProbeExample(c, t) for c, t in zip(saved["test_codes"], saved["test_text"])], saved["setting"])

    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["key"] == key:
            return unpack(saved)
    cut = build(system, args, *priors)
    cut.codec.load_state_dict(torch.load(trained["model"], map_location="cpu", weights_only=True))
    cut.codec.eval()
    setting = next((s for s in cut.settings if s.label == PROBE_SETTING.get(system.config)),
                   min(cut.settings, key=lambda s: s.bitrate))

    def codes(clips):  # ESPnet layout (n_q, 1, N) -> (n_q, N)
        with torch.no_grad():
            return [cut.encode(c.wav.view(1, 1, -1), setting)[: setting.n_q, 0].cpu() for c in clips]

    saved = {"key": key, "setting": {"label": setting.label, "bitrate": float(setting.bitrate),
                                     "frames_per_s": float(setting.frames_per_s), "codebook_size": int(cut.codebook_size)},
             "train_codes": codes(data["probe_train"]), "train_text": [c.text for c in data["probe_train"]],
             "test_codes": codes(data["probe_test"]), "test_text": [c.text for c in data["probe_test"]]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.pt")
    torch.save(saved, tmp)
    os.replace(tmp, cache)
    return unpack(saved)


def untrained_usage(system: System, label: str, clips: List[Clip], args, priors) -> Dict:
    """:func:`code_usage` of the untrained model (the trained run's initial weights) on ``clips``."""
    cut = build(system, args, *priors)
    cut.codec.eval()
    setting = next(s for s in cut.settings if s.label == label)
    with torch.no_grad():
        codes = [cut.encode(c.wav.view(1, 1, -1), setting)[: setting.n_q, 0].cpu() for c in clips]
    return code_usage(codes, int(cut.codebook_size))


def probe_system(name: str, system: System, trained: Dict, data: Dict, args, priors) -> Dict:
    """The CTC character probe on the trained system's frozen tokens (English train -> test
    prompts), after their code usage. Tokens that carry almost no choice (joint perplexity under
    ``--probe_min_perplexity``, e.g. a collapsed codebook emitting one code) say nothing a probe
    could read: the record then gives the usage and why the probe did not run."""
    from espnet2_almtok.bench.probe import train_probe

    train, test, setting = probe_codes(name, system, trained, data, args, priors)
    usage = code_usage([e.codes for e in train + test], setting["codebook_size"])
    res = {"setting": setting["label"], "bitrate": setting["bitrate"], "code_usage": usage,
           "test_code_usage": code_usage([e.codes for e in test], setting["codebook_size"]),
           "untrained_code_usage": untrained_usage(system, setting["label"], data["probe_test"], args, priors)}
    if usage["joint_perplexity"] < args.probe_min_perplexity:
        res["skipped"] = (f"tokens nearly constant (joint perplexity {usage['joint_perplexity']:.2f} < "
                          f"--probe_min_perplexity {args.probe_min_perplexity:g}; distinct codes per codebook "
                          f"{[layer['distinct'] for layer in usage['layers']]}): nothing for a probe to read")
        logging.info(f"{name}: probe skipped, {res['skipped']}")
        return res
    logging.info(f"{name}: CTC probe at {setting['label']} ({len(train)} train / {len(test)} test utts)")
    return {**res, **train_probe(train, test, setting["frames_per_s"], setting["codebook_size"],
                                 epochs=args.probe_epochs, seed=args.seed)}


def lr_of(system: System, args) -> float:
    """The system's own learning rate where it has one, else the comparison's ``--lr``."""
    return args.lr if system.lr is None else system.lr


def train_system(name: str, system: System, data: Dict, args, priors) -> Dict:
    """Train ``system`` for the budget; save its weights to ``work_dir/models/<name>.pth``;
    return the record without scores (curve, budget actually used)."""
    from espnet2_almtok.bench.measure import BudgetTrainer

    cut = build(system, args, *priors)
    settings = settings_of(cut, system)
    curve_setting = settings[len(settings) // 2]
    res = {"note": system.note, "config": system.config, "overrides": system.overrides,
           "generator_params": cut.generator_params, "curve_setting": curve_setting.label, "curve": []}
    budget = args.budget_minutes * 60 * torch.get_num_threads()
    sampler = CropSampler(data["train"], args.train_batch, args.train_seconds, args.seed)
    res["lr"] = lr_of(system, args)
    trainer = BudgetTrainer(cut.codec, lr=res["lr"])
    res["curve"].append({"cpu_s": 0.0, "wall_s": 0.0, "steps": 0, "stage": 1,
                         "dev_mel": dev_mel(cut, curve_setting, data["dev"])})
    stage2_at = args.curve_points - max(1, args.curve_points // 4) if system.two_stage else args.curve_points
    stage = 1
    for point in progress(range(args.curve_points), desc=f"train {name}", unit="chunk"):
        if point == stage2_at:
            res["stage2_frozen"] = freeze_stage2(cut.codec)
            trainer.reset_optimizers()
            stage = 2
        stats = trainer.run(budget / args.curve_points, sampler)
        res["curve"].append({"cpu_s": trainer.cpu_s, "wall_s": trainer.wall_s, "steps": trainer.steps,
                             "stage": stage, "dev_mel": dev_mel(cut, curve_setting, data["dev"]),
                             "train_stats": stats})
        logging.info(f"{name}: chunk {point + 1}/{args.curve_points} (stage {stage}): {trainer.steps} steps, "
                     f"dev mel {res['curve'][-1]['dev_mel']:.3f}")
    res["budget"] = {"cpu_s": trainer.cpu_s, "wall_s": trainer.wall_s, "steps": trainer.steps}
    model = args.work_dir / "models" / f"{name}.pth"
    model.parent.mkdir(parents=True, exist_ok=True)
    tmp = model.with_name(model.stem + ".tmp.pth")
    torch.save(cut.codec.state_dict(), tmp)
    os.replace(tmp, model)
    res["model"] = str(model)
    return res


def score_system(name: str, system: System, trained: Dict, data: Dict, judges: Judges, args, priors) -> Dict:
    """Judges' scores of a trained system's resynthesis (and of its untrained self)."""
    res = dict(trained, settings={})
    cut = build(system, args, *priors)  # same seed: the untrained weights of the trained run
    settings = settings_of(cut, system)
    if system.untrained_baseline:  # at the middle setting: does training move the judges at all?
        s = settings[len(settings) // 2]
        logging.info(f"{name}: scoring the untrained model at {s.label}")
        res["untrained"] = {s.label: score_outputs(resynthesize(cut, s, data["test"]), data["test"], judges)}
    cut.codec.load_state_dict(torch.load(trained["model"], map_location="cpu", weights_only=True))
    cut.codec.eval()
    for s in settings:
        logging.info(f"{name}: scoring {s.label}")
        res["settings"][s.label] = {**s.as_dict(), **score_outputs(resynthesize(cut, s, data["test"]),
                                                                    data["test"], judges)}
    return res


def extract_priors(args, train_dir: Path, codebook_size: int):
    """MFCC k-means priors of the training audio (cached in ``output_dir/priors``)."""
    from espnet2_almtok.recipe import semantic_prior

    out = args.work_dir / "priors"
    if not (out / "prior_info.yaml").is_file():
        semantic_prior.main(["--wav_scp", str(train_dir / "wav.scp"), "--upstream", "mfcc", "--layer", "0",
                             "--codebook_size", str(codebook_size), "--n_q", "3",
                             "--max_utts", str(args.max_train_utts), "--out_dir", str(out)])
    info = yaml.safe_load((out / "prior_info.yaml").read_text())
    return [str(out / f"codebook_{i}.npy") for i in (1, 2, 3)], int(info["dim"])


def almtok_for_diagnosis(data_dir: Path, work_dir: Path, overrides: Optional[Dict] = None,
                         generator_overrides: Optional[Dict] = None, seed: int = 0):
    """The ``almtok`` system as this comparison builds it (frozen MFCC priors from
    ``work_dir/priors``, extracted there if missing), untrained (weights drawn with ``seed``),
    with the training clips: what the ``bench`` diagnostics train. Returns ``(codec under test,
    train clips)``."""
    import_quietly("espnet2_almtok.tasks.codec")
    args = get_parser().parse_args(["--data_dir", str(data_dir), "--output_dir", str(work_dir),
                                    "--work_dir", str(work_dir), "--seed", str(int(seed))])
    train = load_dir(data_dir / "train", 0, 0)
    priors = extract_priors(args, data_dir / "train", 1024)
    system = System("almtok", priors=True, overrides=overrides or {}, generator_overrides=generator_overrides or {})
    return build(system, args, *priors), train


# ------------------------------------------------------------------------------------- report
# How far a trained system must move a score past its untrained self to count as better (the
# order of the spread between test sets of this size); ``sign`` -1: lower is better.
JUDGE_MARGINS = {"mel_distance": (-1, 0.05), "stft_distance": (-1, 0.05), "pesq_wb": (1, 0.05),
                 "stoi": (1, 0.02), "wer": (-1, 2.0), "dnsmos": (1, 0.05)}


def against_untrained(trained: Dict[str, float], untrained: Dict[str, float]) -> Dict[str, Dict]:
    """Per score of :data:`JUDGE_MARGINS`: the trained minus the untrained value and a verdict,
    ``better`` / ``worse`` (past the margin, in the score's good / bad direction) or ``same``."""
    out = {}
    for key, (sign, margin) in JUDGE_MARGINS.items():
        delta = trained[key] - untrained[key]
        verdict = "better" if sign * delta >= margin else "worse" if -sign * delta >= margin else "same"
        out[key] = {"delta": delta, "verdict": verdict}
    return out


def markdown(results: Dict) -> str:
    m = results["machine"]
    lines = [f"# Equal-budget comparison on real audio ({'quick smoke run' if results['quick'] else 'full run'})", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads. "
             f"Data: {results['data']}. Budget per system: {results['budget']}.", "",
             f"Reference (original audio): pocketsphinx WER {results['reference']['wer']:.1f} % (the ceiling), "
             f"DNSMOS {results['reference']['dnsmos']:.2f}.", "",
             "| system | setting | bps | steps | mel dist | STFT dist | PESQ | STOI | WER % | DNSMOS | probe CER % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["systems"].items():
        for label, s in r["settings"].items():
            p = r.get("probe")
            probe = f"{p['cer']:.1f}" if p and "cer" in p and p["setting"] == label else ""
            lines.append(f"| {name} | {label} | {s['bitrate']:.0f} | {r['budget']['steps']} | {s['mel_distance']:.3f} | "
                         f"{s['stft_distance']:.3f} | {s['pesq_wb']:.2f} | {s['stoi']:.3f} | {s['wer']:.1f} | "
                         f"{s['dnsmos']:.2f} | {probe} |")
        for label, s in r.get("untrained", {}).items():
            lines.append(f"| {name} (untrained) | {label} | {r['settings'][label]['bitrate']:.0f} | 0 | "
                         f"{s['mel_distance']:.3f} | {s['stft_distance']:.3f} | {s['pesq_wb']:.2f} | {s['stoi']:.3f} | "
                         f"{s['wer']:.1f} | {s['dnsmos']:.2f} | |")
    moved = [(name, label, against_untrained(r["settings"][label], u))
             for name, r in results["systems"].items() for label, u in r.get("untrained", {}).items()]
    if moved:
        margins = ", ".join(f"{k} {m:g}" for k, (_, m) in JUDGE_MARGINS.items())
        lines += ["", f"Trained against untrained (same weights before training, same setting; better/worse = "
                  f"past a margin of {margins}):", ""]
        for name, label, verdicts in moved:
            better = [k for k, v in verdicts.items() if v["verdict"] == "better"]
            worse = [k for k, v in verdicts.items() if v["verdict"] == "worse"]
            lines.append(f"- {name} at {label}: better on {len(better)} of {len(verdicts)} "
                         f"({', '.join(better) or 'none'}); worse on {', '.join(worse) or 'none'}")
    if results.get("not_scored"):
        lines += ["", f"Trained but not scored in this report: {', '.join(results['not_scored'])}."]
    lines += ["", "Tokens and probe: each system's code usage on the English speech prompts, then a CTC "
              "character recogniser (dilated convolutions, ``bench/probe.py``) trained on its frozen tokens "
              "(English train prompts -> English test prompts).", ""]
    for name, r in results["systems"].items():
        p = r.get("probe")
        if not p:
            lines.append(f"- {name}: not probed")
            continue
        usage = p["code_usage"]
        distinct = ", ".join(str(layer["distinct"]) for layer in usage["layers"])
        perplexity = ", ".join(f"{layer['perplexity']:.2f}" for layer in usage["layers"])
        lines.append(f"- {name} at {p['setting']}: codes in use per codebook {distinct} (perplexity {perplexity}) "
                     f"over {usage['positions']} token positions")
        if "test_code_usage" in p:
            lines.append(f"  - English test prompts: {describe_usage(p['test_code_usage'])}")
        if "untrained_code_usage" in p:
            before = p["untrained_code_usage"]["layers"]
            distinct = ", ".join(str(layer["distinct"]) for layer in before)
            perplexity = ", ".join(f"{layer['perplexity']:.2f}" for layer in before)
            lines.append(f"  - untrained: {distinct} codes in use (perplexity {perplexity}) on the English test prompts")
        if "skipped" in p:
            lines.append(f"  - probe not run: {p['skipped']}")
            continue
        lines.append(f"  - probe at {p['bitrate']:.0f} bps: CER {p['cer']:.1f} %, WER {p['wer']:.1f} % "
                     f"(train CER {p['train_cer']:.1f} %; {p['n_train']} train / {p['n_test']} test utts)")
    return "\n".join(lines) + "\n"


def _save_fig(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def plot(results: Dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("wer", "pocketsphinx WER % (lower is better)"), ("dnsmos", "DNSMOS overall"),
               ("pesq_wb", "PESQ-wb"), ("stoi", "STOI")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (m, label) in zip(axes.flat, metrics):
        for name, r in results["systems"].items():
            pts = sorted((s["bitrate"], s[m]) for s in r["settings"].values())
            style = "o-" if name in ("almtok", "soundstream", "encodec", "dac") else "x--" if len(pts) > 1 else "x"
            line, = ax.plot(*zip(*pts), style, label=name)
            for setting, u in r.get("untrained", {}).items():  # the same codec before training
                ax.plot([r["settings"][setting]["bitrate"]], [u[m]], "v", mfc="none", color=line.get_color(),
                        label=f"{name} untrained")
        if m in results["reference"]:
            ax.axhline(results["reference"][m], color="k", ls="--", lw=0.8, label="original audio")
        ax.set_xscale("log")
        ax.set_xlabel("bitrate (bps)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Equal budget ({results['budget']}), real audio")
    fig.tight_layout()
    # beside the plots, not over them (a dozen systems and their untrained selves)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    _save_fig(fig, out_dir / "quality_vs_bitrate.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = curve_axis_top(results["systems"])
    for name, r in results["systems"].items():
        xs = [c["cpu_s"] / 60 for c in r["curve"]]
        ys = [c["dev_mel"] for c in r["curve"]]
        peak = max(ys)
        label = name if peak <= top else f"{name} (off scale: up to {peak:.1f})"
        ax.plot(xs, ys, "o-" if not name.startswith("almtok_") else "--", label=label)
    ax.set_ylim(0, top)
    ax.set_xlabel("training CPU minutes")
    ax.set_ylabel("dev mel distance (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Training curves (ALMTokenizer: stage 2 in the last quarter)")
    fig.tight_layout()
    _save_fig(fig, out_dir / "training_curves.png")


def curve_axis_top(systems: Dict[str, dict]) -> float:
    """The training-curve plot's upper y limit: 1.5 x the highest untrained dev mel distance, so
    a diverging system (e.g. DAC at lr 5e-4) does not flatten every other curve; its points above
    are cut and its legend entry says how high it went."""
    return 1.5 * max(r["curve"][0]["dev_mel"] for r in systems.values())


# ------------------------------------------------------------------------------------- main
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, required=True, help="formatted data: <dir>/{train,dev,test}")
    p.add_argument("--output_dir", type=Path, required=True, help="results and plots (small; e.g. docs/compare)")
    p.add_argument("--work_dir", type=Path, default=None,
                   help="trained weights, priors and per-system training records (default: <output_dir>/work)")
    p.add_argument("--train_only", action="store_true", help="phase 1 only: train and save every system")
    p.add_argument("--report_only", action="store_true",
                   help="only write results/plots from the systems scored so far (the others are listed)")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--config_dir", type=Path, default=ROOT / "conf" / "benchmark")
    p.add_argument("--budget_minutes", type=float, default=5.0, help="training budget per system (CPU time / threads)")
    p.add_argument("--curve_points", type=int, default=8, help="dev evaluations along the budget (>= 4)")
    p.add_argument("--train_batch", type=int, default=4)
    p.add_argument("--train_seconds", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max_train_utts", type=int, default=0, help="0: all")
    p.add_argument("--max_test_utts", type=int, default=20,
                   help="test utterances scored besides the English speech prompts (all of which are)")
    p.add_argument("--dev_clips", type=int, default=8)
    p.add_argument("--probe_epochs", type=int, default=30, help="0: no probe (judges only)")
    p.add_argument("--probe_min_perplexity", type=float, default=2.0,
                   help="probe only tokens whose joint code perplexity reaches this (below: nearly constant)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default). 1 keeps the CPU-time budget fair: with several "
                        "threads on a busy machine OpenMP spin-waits burn CPU time without progress")
    p.add_argument("--seed", type=int, default=0,
                   help="initial weights, training crops and the probe: rerun with another seed to see the spread")
    p.add_argument("--data_seed", type=int, default=0,
                   help="which utterances are sampled for train/test/dev (keep it fixed across --seed runs so "
                        "their scores are on the same clips)")
    p.add_argument("--quick", action="store_true", help="smoke run: seconds of budget, few utterances")
    return p


def main(argv: Sequence[str] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (compare) %(levelname)s: %(message)s")
    import_quietly("espnet2_almtok.tasks.codec")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.budget_minutes, args.curve_points, args.max_test_utts = 0.05, 2, 4
        args.max_train_utts, args.dev_clips, args.probe_epochs = 12, 2, 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    args.work_dir = args.work_dir or args.output_dir / "work"
    train = load_dir(args.data_dir / "train", args.max_train_utts, args.data_seed)
    test = scored_test_clips(load_dir(args.data_dir / "test"), args.max_test_utts, args.data_seed)
    dev = load_dir(args.data_dir / "dev", args.dev_clips, args.data_seed)
    data = {"train": train, "test": test, "dev": dev, "probe_train": english_speech(train),
            "probe_test": english_speech(test)}
    leaked = {c.text for c in data["probe_test"]} & {c.text for c in data["probe_train"]}
    if leaked:
        raise ValueError(f"{len(leaked)} English test prompt(s) also occur in training, e.g. {sorted(leaked)[:2]}: "
                         "the probe would measure memory, not tokens; re-split the corpus")
    cb_size = yaml.safe_load((args.config_dir / "almtok.yaml").read_text())["codec_conf"]["generator_params"]["codebook_size"]
    priors = extract_priors(args, args.data_dir / "train", cb_size) if any(
        SYSTEMS[n].priors for n in args.systems) else (None, 0)
    en = english_speech(test)

    if args.report_only:  # aggregate what is scored (e.g. while other systems are still being scored)
        return report(args, argv, train, test, dev, en)

    # phase 1: training (resumable: a finished system's record is kept in work_dir/trained/)
    trained_dir = args.work_dir / "trained"
    trained_dir.mkdir(parents=True, exist_ok=True)
    trained = {}
    for name in args.systems:
        done = trained_dir / f"{name}.json"
        if done.is_file():
            logging.info(f"{name}: trained earlier ({done}); delete it to retrain")
        else:
            atomic_write_text(done, json.dumps(train_system(name, SYSTEMS[name], data, args, priors), indent=2))
        trained[name] = json.loads(done.read_text())
    if args.train_only:
        return

    # phase 2: scoring by the independent judges, the probe (resumable likewise)
    score_missing(args, data, trained, test, en, priors)
    report(args, argv, train, test, dev, en)


def reference_scores(args, test: List[Clip], en: List[Clip], judges: Optional["Judges"]) -> Dict:
    """The original audio's WER and DNSMOS on ``en`` (cached per test set in ``work_dir``)."""
    ref_file = args.work_dir / "reference.json"
    test_key = hashlib.sha256(" ".join(sorted(c.utt for c in test)).encode()).hexdigest()
    reference = json.loads(ref_file.read_text()) if ref_file.is_file() else {}
    if reference.get("test_set") != test_key:
        judges = judges or Judges()
        reference = {"test_set": test_key,
                     "wer": wer({c.utt: c.text for c in en}, {c.utt: judges.transcribe(c.wav) for c in en}),
                     "dnsmos": float(np.nanmean([judges.dnsmos(c.wav) for c in en]))}
        atomic_write_text(ref_file, json.dumps(reference, indent=1))
    return reference


def score_missing(args, data: Dict, trained: Dict, test: List[Clip], en: List[Clip], priors) -> None:
    """Phase 2: the judges (``output_dir/systems/<name>.json``), then the probe
    (``output_dir/probes/<name>.json``); each record is kept once written (delete it to redo)."""
    judges = None
    for name in args.systems:
        done = args.output_dir / "systems" / f"{name}.json"
        if done.is_file():
            logging.info(f"{name}: scored earlier ({done}); delete it to redo")
            continue
        if judges is None:
            judges = Judges()
            reference_scores(args, test, en, judges)
        done.parent.mkdir(exist_ok=True)
        atomic_write_text(done, json.dumps(score_system(name, SYSTEMS[name], trained[name], data, judges,
                                                        args, priors), indent=2))
    if args.probe_epochs <= 0:
        return
    for name in args.systems:
        done = args.output_dir / "probes" / f"{name}.json"
        if done.is_file():
            logging.info(f"{name}: probed earlier ({done}); delete it to redo")
            continue
        done.parent.mkdir(exist_ok=True)
        atomic_write_text(done, json.dumps(probe_system(name, SYSTEMS[name], trained[name], data, args, priors),
                                           indent=2))


def report(args, argv, train: List[Clip], test: List[Clip], dev: List[Clip], en: List[Clip]) -> None:
    """``results.{json,md}`` and the plots from the scored systems in ``output_dir/systems``."""
    import sys

    reference = reference_scores(args, test, en, None)
    sys_dir = args.output_dir / "systems"
    scored = {n: json.loads((sys_dir / f"{n}.json").read_text()) for n in args.systems
              if (sys_dir / f"{n}.json").is_file()}
    for n, r in scored.items():  # the probe's record, where it ran
        probe_file = args.output_dir / "probes" / f"{n}.json"
        if probe_file.is_file():
            r["probe"] = json.loads(probe_file.read_text())
    missing = [n for n in args.systems if n not in scored]
    if not scored:
        raise FileNotFoundError(f"no scored system in {sys_dir}; run without --report_only first")
    own = {n: SYSTEMS[n].lr for n in scored if SYSTEMS[n].lr is not None}
    own_lr = f" (own lr: {', '.join(f'{n} {lr:g}' for n, lr in own.items())})" if own else ""
    results = {"quick": args.quick, "command": "python -m espnet2_almtok.bin.compare " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
               "data": f"{args.data_dir}: {len(train)} train utts ({sum(c.wav.numel() for c in train) / FS / 60:.1f} min), "
                       f"{len(test)} test ({len(en)} English speech), {len(dev)} dev clips for the curves",
               "budget": f"{args.budget_minutes:g} min x {torch.get_num_threads()} threads of CPU time, "
                         f"{args.train_batch} x {args.train_seconds:g} s crops, Adam lr {args.lr:g}{own_lr}, seed {args.seed} "
                         f"(data seed {args.data_seed})",
               "reference": reference, "systems": scored, "not_scored": missing}
    atomic_write_text(args.output_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(args.output_dir / "results.md", markdown(results))
    plot(results, args.output_dir)
    print(markdown(results))


if __name__ == "__main__":
    main()

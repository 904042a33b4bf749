#!/usr/bin/env python3
"""The first GPU's check: training throughput and memory, the speed table and learning curves,
in about 8 minutes of one GPU, recorded under ``docs/gpu/<date>-<device>/``.

    utils/gpu_check.sh                 # on the GPU machine (the asterisk corpus staged first)
    utils/gpu_check.sh --quick         # any machine, CPU too: tiny sizes, about a minute

Parts, each written to ``results.json`` and ``README.md`` as soon as it is measured (a run cut
at its time limit keeps what it measured; ``--parts`` reruns a subset, merging):

1. ``train``: G+D steps of the paper config (``conf/tuning/train_almtok_paper.yaml``, 3 s crops,
   ``w`` sampled per step as in training, :func:`~espnet2_almtok.train.gan_trainer.gan_turn`:
   the trainer's own turn) in float32 with TF32 and in bf16 autocast, at two per-GPU batch sizes:
   steps/s, audio seconds/s and the peak memory (CUDA allocator's peak; on a CPU the process's
   peak RSS so far). An out-of-memory batch is recorded as such.
2. ``speed``: ``bin/benchmark --speed`` on the device, float32 (ALMTokenizer and ESPnet's
   codecs) and bf16 (ALMTokenizer), each system point in its own process.
3. ``curve``: ``bench/learning_floor``'s reconstruction training of the benchmark-size generator
   (``conf/benchmark/almtok.yaml``, frozen MFCC priors) on the asterisk corpus for
   ``--curve_seconds`` of wall time each: the paper's layout (MAE masking shared with the coded
   pass) and the recipe's working alternative (``query_shortcut``, ``mae_pass: separate``), with
   the CPU comparison's judges on English dev prompts: dev mel at 5 points, STOI, codes in use.

With ``--quick`` every part runs at toy sizes (the debug config, 2 steps, a synthetic speech-like
corpus made in the work dir) in seconds on a CPU: what the tests and CI run. Nothing it starts
outlives it (the speed part's measurement processes are waited for or stopped by pid).
"""

import argparse
import json
import logging
import random
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("train", "speed", "curve")
PRECISIONS = {"fp32_tf32": None, "bf16": torch.bfloat16}
CURVE_SYSTEMS = {  # name -> (learning_floor generator overrides, its CLI flags)
    "paper_layout": ({}, "--path vq --mae --mae_loss"),
    "shortcut_mae_separate": ({"query_shortcut": True, "mae_pass": "separate"},
                              "--path vq --query_shortcut --mae --mae_loss --mae_pass separate"),
}
ASTERISK_HINT = "cd egs2/almtok/codec1 && ./run.sh --corpus asterisk --stop_stage 2"


def device_name(device: str) -> str:
    """A folder-safe name of the device: ``nvidia-h100-80gb-hbm3``, ``cpu``."""
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB -> GB, the process's peak so far


def train_throughput(config: Path, device: str, precision: str, batch: int, crop_s: float,
                     steps: int, warmup: int, seed: int = 0) -> Dict:
    """G+D training steps of ``config``'s codec: steps/s, audio seconds/s, peak memory."""
    import yaml

    from espnet2_almtok.codec.almtok import ALMTokenizerCodec
    from espnet2_almtok.train.gan_trainer import gan_turn

    dev = torch.device(device)
    conf = yaml.safe_load(config.read_text())
    codec_conf = dict(conf["codec_conf"])
    codec_conf["generator_params"] = {**codec_conf["generator_params"], "codebook_init": None}
    torch.manual_seed(seed)
    random.seed(seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    codec = ALMTokenizerCodec(**codec_conf).to(dev).train()
    opt = conf.get("optim_conf", {})
    optimizers = [torch.optim.AdamW(m.parameters(), lr=opt.get("lr", 2e-4), betas=tuple(opt.get("betas", (0.8, 0.99))))
                  for m in (codec.generator, codec.discriminator)]
    fs = codec_conf.get("sampling_rate", 16000)
    audio = (torch.randn(batch, int(crop_s * fs), generator=torch.Generator().manual_seed(seed)) * 0.1).to(dev)
    dtype = PRECISIONS[precision]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {"precision": precision, "batch": batch, "crop_s": crop_s, "steps": steps}
    try:
        t0 = None
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t0 = time.perf_counter()
            for turn in ("generator", "discriminator"):
                gan_turn(codec, {"audio": audio}, turn, optimizers, [None, None], dtype,
                         grad_clip=float(conf.get("grad_clip", 10)), ngpu=int(dev.type == "cuda"))
        sync()
        seconds = time.perf_counter() - t0
        out.update(steps_per_s=steps / seconds, audio_s_per_s=steps * batch * crop_s / seconds)
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = f"out of memory: {str(e).splitlines()[0]}"
    out["peak_gb"] = peak_memory_gb(dev)
    del codec, optimizers, audio
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def make_quick_corpus(root: Path, n_train: int = 8, n_dev: int = 2, seconds: float = 2.5) -> Path:
    """A speech-like corpus in learning_floor's form (``data/{train,dev}``, English speech)."""
    import soundfile

    from espnet2_almtok.bench.speed import test_signal
    from espnet2_almtok.recipe.kaldi_dir import Utterance, write_data_dir

    for part, n in (("train", n_train), ("dev", n_dev)):
        (root / part / "wav").mkdir(parents=True, exist_ok=True)
        utts = []
        for i in range(n):
            utt, wav = f"{part}{i}", root / part / "wav" / f"{part}{i}.wav"
            soundfile.write(wav, test_signal(seconds, 16000, seed=i + 100 * (part == "dev")).numpy(), 16000)
            utts.append(Utterance(utt, str(wav), "spk", f"hello number {i}", "speech", {"utt2lang": "en"}))
        write_data_dir(root / part, utts)
    return root


def learning_curve(system: str, data_dir: Path, work_dir: Path, device: str, seconds: float, batch: int,
                   crop_s: float, dev_clips: int, seed: int = 0) -> Dict:
    """``bench/learning_floor`` on ``device`` for ``seconds`` of wall time, then the judges."""
    import numpy as np

    from espnet2_almtok.bench import learning_floor as LF
    from espnet2_almtok.bench import compare as C
    from espnet2_almtok.code_usage import code_usage, describe
    from espnet2_almtok.recipe.score import Scorer

    overrides, flags = CURVE_SYSTEMS[system]
    cut, train_clips = C.almtok_for_diagnosis(data_dir, work_dir, generator_overrides=overrides, seed=seed)
    dev = [c.wav for c in C.english_speech(C.load_dir(data_dir / "dev"))[:dev_clips]]
    if not dev:
        raise ValueError(f"{data_dir}/dev has no English speech clip (utt2category speech, utt2lang en)")
    codec = cut.codec.to(device)
    gen = codec.generator
    curve = LF.train(gen, codec, C.CropSampler(train_clips, batch, crop_s, seed), dev, "vq", seconds, 5e-4,
                     points=4, seed=seed, mae=True, mae_loss=True, clock="wall")
    scorer = Scorer(16000)
    gen.eval()
    with torch.no_grad():
        stoi, codes = [], []
        for clip in dev:
            x = clip.view(1, 1, -1).to(device)
            resyn = LF.reconstruct(gen, x, 4, "vq")[0].view(-1).float().cpu()
            stoi.append(scorer.stoi(clip.numpy(), resyn.numpy()))
            codes.append(gen.encode(x, 4)[0].cpu())
    usage = code_usage(codes, gen.quantizer.codebook_size)
    return {"system": system, "learning_floor_flags": flags, "seconds": seconds, "batch": batch, "crop_s": crop_s,
            "curve": curve, "dev_stoi": float(np.mean(stoi)), "codes_in_use": [layer["in_use"] for layer in usage["layers"]],
            "codes": describe(usage), "dev_clips": len(dev)}


def speed_table(out_dir: Path, device: str, dtype: str, quick: bool, codecs: Sequence[str],
                lengths: Sequence[float], timeout_s: float) -> Dict:
    """``bin/benchmark --speed`` in a child process (which measures each point in its own)."""
    sub = out_dir / f"speed_{dtype}"
    cmd = [sys.executable, "-m", "espnet2_almtok.bin.benchmark", "--speed", "--output_dir", str(sub),
           "--device", device, "--dtype", dtype, "--codecs", *codecs, "--speed_repeats", "2"]
    cmd += ["--quick"] if quick else ["--speed_lengths", *map(str, lengths), "--speed_files", "32"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"command": shlex.join(cmd[1:]), "error": f"stopped after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"command": shlex.join(cmd[1:]), "error": log[-2000:]}
    results = json.loads((sub / "speed.json").read_text())
    return {"command": "python " + shlex.join(cmd[1:]), "table": f"speed_{dtype}/speed.md",
            "systems": {n: {"points": r["points"], "throughput": r.get("throughput")}
                        for n, r in results["systems"].items()}}


# ------------------------------------------------------------------------------------------ report
def markdown(results: Dict) -> str:
    lines = [f"# GPU check: {results['device']}" + (" (quick smoke run, toy sizes)" if results["quick"] else ""), "",
             f"Date {results['date']}. Command: `{results['command']}`. torch {results['torch']}.", ""]
    train = results.get("train")
    if train:
        lines += ["## Training throughput and memory (G+D steps, the trainer's turn)", "",
                  f"Config `{train['config']}`, {train['crop_s']:g} s crops, w sampled per step.", "",
                  "| precision | per-GPU batch | steps/s | audio s/s | peak GB |", "| --- | --- | --- | --- | --- |"]
        for r in train["runs"]:
            if "error" in r:
                lines.append(f"| {r['precision']} | {r['batch']} | {r['error']} | | {r['peak_gb']:.1f} |")
            else:
                lines.append(f"| {r['precision']} | {r['batch']} | {r['steps_per_s']:.2f} | {r['audio_s_per_s']:.1f} | "
                             f"{r['peak_gb']:.1f} |")
        lines.append("")
    for dtype, sp in sorted(results.get("speed", {}).items()):
        lines += [f"## Speed table, {dtype}", "", f"`{sp['command']}`", ""]
        lines += [f"Not measured: {sp['error'][:300]}"] if "error" in sp else [f"Table: [{sp['table']}]({sp['table']})"]
        lines.append("")
    curves = results.get("curve", {})
    if curves:
        lines += ["## Learning curves (reconstruction training, benchmark-size generator)", "",
                  f"Data: {results.get('curve_data', '?')}; dev mel (lower is better) at the start and after each "
                  "quarter of the time, STOI and codes in use on the English dev clips at w = 4.", "",
                  "| system | learning_floor flags | steps | dev mel at each point | STOI | codes in use q1/q2/q3 |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, c in curves.items():
            if "error" in c:
                lines.append(f"| {name} | | {c['error'][:200]} | | | |")
                continue
            mels = " -> ".join(f"{p['dev_mel']:.2f}" for p in c["curve"])
            use = "/".join(f"{100 * u:.0f} %" for u in c["codes_in_use"])
            lines.append(f"| {name} | `{c['learning_floor_flags']}` | {c['curve'][-1]['steps']} | {mels} | "
                         f"{c['dev_stoi']:.3f} | {use} |")
        lines.append("")
    return "\n".join(lines)


def save(out_dir: Path, results: Dict) -> None:
    from espnet2_almtok.fileio import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "README.md", markdown(results))


def main(argv: Optional[Sequence[str]] = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes on any device (CPU too): what the tests run")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--output_root", type=Path, default=ROOT / "docs" / "gpu",
                   help="the run's folder <date>-<device> is made here")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--data_dir", type=Path, default=ROOT / "egs2/almtok/codec1/dump/raw",
                   help="the asterisk corpus, formatted (" + ASTERISK_HINT + ")")
    p.add_argument("--work_dir", type=Path, default=ROOT / "exp/compare_norm",
                   help="where the MFCC priors are (extracted there if missing)")
    p.add_argument("--train_batches", type=int, nargs=2, default=[16, 32], help="per-GPU batch sizes")
    p.add_argument("--train_steps", type=int, default=30)
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS),
                   help="of the training part")
    p.add_argument("--curve_seconds", type=float, default=120.0, help="wall seconds of training per curve")
    p.add_argument("--speed_timeout", type=float, default=150.0, help="seconds per speed table (each dtype)")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (use --device cpu, with --quick for a smoke run)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu_check: %(message)s")

    date = time.strftime("%Y-%m-%d", time.gmtime())
    out_dir = args.output_root / (f"{date}-{device_name(device)}" + ("-quick" if args.quick else ""))
    results = json.loads((out_dir / "results.json").read_text()) if (out_dir / "results.json").is_file() else {}
    results.update(device=torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU",
                   quick=args.quick, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), torch=torch.__version__,
                   command="python -m espnet2_almtok.bench.gpu_check " + shlex.join(argv if argv is not None else sys.argv[1:]))

    data_dir, work_dir = args.data_dir, args.work_dir
    if args.quick:
        data_dir, work_dir = out_dir / "work" / "data", out_dir / "work"
        if "curve" in args.parts and not (data_dir / "dev" / "wav.scp").is_file():
            make_quick_corpus(data_dir)
    elif "curve" in args.parts and not (data_dir / "dev" / "wav.scp").is_file():
        p.error(f"{data_dir}/dev/wav.scp not found: the learning curves train on the asterisk corpus; stage it "
                f"first ({ASTERISK_HINT}), or leave out the part (--parts train speed)")

    if "train" in args.parts:
        config = ROOT / ("conf/tuning/train_almtok_debug.yaml" if args.quick else "conf/tuning/train_almtok_paper.yaml")
        batches, steps, warmup, crop = ([1, 2], 2, 1, 0.5) if args.quick else (args.train_batches, args.train_steps, 3, 3.0)
        results["train"] = {"config": str(config.relative_to(ROOT)), "crop_s": crop, "runs": []}
        for precision in args.precisions:
            for batch in batches:
                logging.info(f"train: {precision}, batch {batch}")
                results["train"]["runs"].append(train_throughput(config, device, precision, batch, crop, steps, warmup))
                save(out_dir, results)
    if "speed" in args.parts:
        results["speed"] = {}
        for dtype, codecs in (("float32", ["almtok"] if args.quick else ["almtok", "soundstream", "encodec", "dac"]),
                              ("bfloat16", ["almtok"])):
            logging.info(f"speed: {dtype}")
            results["speed"][dtype] = speed_table(out_dir, device, dtype, args.quick, codecs, [1, 10, 60],
                                                  args.speed_timeout)
            save(out_dir, results)
    if "curve" in args.parts:
        results["curve"] = {}
        results["curve_data"] = ("a synthetic speech-like corpus (--quick)" if args.quick
                                 else f"{data_dir} (the asterisk corpus: {ASTERISK_HINT})")
        seconds, batch, crop, clips = (3.0, 2, 0.5, 2) if args.quick else (args.curve_seconds, 16, 1.0, 8)
        for system in CURVE_SYSTEMS:
            logging.info(f"curve: {system}, {seconds:g} s")
            try:
                results["curve"][system] = learning_curve(system, data_dir, work_dir, device, seconds, batch, crop, clips)
            except torch.cuda.OutOfMemoryError as e:
                results["curve"][system] = {"error": f"out of memory: {str(e).splitlines()[0]}"}
            save(out_dir, results)
    save(out_dir, results)
    print(out_dir)
    return out_dir


if __name__ == "__main__":
    main()

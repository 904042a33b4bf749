#!/usr/bin/env python3
"""Side-by-side benchmark: ALMTokenizer vs ESPnet's SoundStream, Encodec and DAC.

    python -m espnet2_almtok.bin.benchmark --output_dir exp/benchmark            # full run
    python -m espnet2_almtok.bin.benchmark --output_dir /tmp/bench --quick       # smoke run

Writes ``results.json``, ``results.md`` and ``quality_vs_bitrate.png``. Per codec (configs in
``conf/benchmark/``, comparable generator sizes): parameters; token rate and bitrate per
setting; encode/decode real-time factor (median and 25-75 % spread over ``--repeats`` after
``--warmup``; CPU threads stated; also GPU where ``--device cuda``); batch throughput; peak
memory; training throughput (G+D step); reconstruction quality after the *same* training
budget (steps, batch, data, seed); a speaker-identity probe on frozen first-codebook tokens;
and encode time vs audio length (1-60 s) with ALMTokenizer's conv vs Transformer split.
Training throughput is also measured for the tiny and paper ALMTokenizer configs.

Data: ``--train_scp``/``--test_scp`` (+ ``utt2spk`` beside them) default to the codec recipe's
demo dump (``egs2/almtok/codec1/dump/raw/{train,test}``; run ``run.sh --stop_stage 2`` first).
``--quick`` uses synthetic clips when that dump is absent, untrained models and one repeat.

Speed mode (``--speed``; :mod:`espnet2_almtok.bench.speed`) writes ``speed.json`` and
``speed.md`` instead: encode / decode time and peak memory at 1 s, 10 s, 60 s and 10 min for
the paper-size ALMTokenizer (generator only, long audio in windows of its training crop) and
ESPnet's SoundStream, Encodec and DAC at their default sizes, plus batch throughput over many
short files, each point in its own process::

    python -m espnet2_almtok.bin.benchmark --speed --output_dir docs/benchmark            # CPU
    python -m espnet2_almtok.bin.benchmark --speed --output_dir docs/benchmark/gpu --device cuda --dtype bfloat16
"""

import argparse
import json
import logging
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from espnet2_almtok.progress import progress

from espnet2_almtok.startup import import_quietly
from espnet2_almtok.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
CODECS = ("almtok", "soundstream", "encodec", "dac")
RECIPE_DUMP = ROOT / "egs2" / "almtok" / "codec1" / "dump" / "raw"


# ------------------------------------------------------------------------------------- data
def load_set(scp: Path, fs: int, max_utts: int = 0) -> List[Tuple[str, str, torch.Tensor]]:
    """-> [(utt, speaker, wav (T,))] from a wav.scp with utt2spk beside it; speech only."""
    from espnet2_almtok.audio import read_audio, resample, to_mono_tensor
    from espnet2_almtok.recipe.kaldi_dir import read_table

    wavs, spk = read_table(scp), read_table(scp.parent / "utt2spk")
    cat = read_table(scp.parent / "utt2category")
    out = []
    for utt in sorted(wavs):
        if cat.get(utt, "speech") != "speech":
            continue
        wav, sr = read_audio(wavs[utt], utt)
        out.append((utt, spk.get(utt, utt), resample(to_mono_tensor(wav, utt), sr, fs, utt)))
    if not out:
        raise ValueError(f"{scp} lists no speech utterances ({len(wavs)} entries, none of category speech "
                         "in utt2category): nothing to benchmark; pass a --train_scp/--test_scp with speech")
    return out[:max_utts] if max_utts else out


def synthetic_set(n: int, seconds: float, fs: int, seed: int) -> List[Tuple[str, str, torch.Tensor]]:
    """Harmonic clips of 3 'speakers' (pitch ranges), for --quick without the recipe's dump."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        spk = i % 3
        t = torch.arange(int(seconds * fs)) / fs
        f0 = 100 + 60 * spk + 20 * torch.sin(2 * math.pi * (1 + torch.rand(1, generator=g)) * t)
        phase = 2 * math.pi * torch.cumsum(f0, 0) / fs
        wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.2
        out.append((f"syn{i:03d}", f"spk{spk}", (wav + 0.01 * torch.randn(t.shape, generator=g)).float()))
    return out


def crop_batches(data, steps: int, batch: int, seconds: float, fs: int, seed: int) -> List[torch.Tensor]:
    """The same random crops for every codec: ``steps`` batches of ``(batch, seconds * fs)``."""
    rng = random.Random(seed)
    n = int(seconds * fs)
    out = []
    for _ in range(steps):
        rows = []
        for _ in range(batch):
            wav = data[rng.randrange(len(data))][2]
            if wav.numel() < n:
                wav = torch.nn.functional.pad(wav, (0, n - wav.numel()))
            start = rng.randrange(wav.numel() - n + 1)
            rows.append(wav[start: start + n])
        out.append(torch.stack(rows))
    return out


# ------------------------------------------------------------------------------------- parts
def speed(cut, clip: torch.Tensor, args) -> Dict:
    from espnet2_almtok.bench.measure import PeakMemory, timeit

    dur = clip.numel() / cut.fs
    x = clip.view(1, 1, -1).to(args.device)
    res = {}
    for s in cut.settings:
        codes = cut.encode(x, s)
        enc = timeit(lambda: cut.encode(x, s), args.repeats, args.warmup, args.device)
        dec = timeit(lambda: cut.decode(codes, s), args.repeats, args.warmup, args.device)
        with PeakMemory(args.device) as mem:
            cut.decode(cut.encode(x, s), s)
        xb = clip.view(1, 1, -1).repeat(args.batch_size, 1, 1).to(args.device)
        both = timeit(lambda: cut.decode(cut.encode(xb, s), s), max(1, args.repeats // 2), 1, args.device)
        res[s.label] = {
            **s.as_dict(),
            "encode_rtf": {k: v / dur if k != "n" else v for k, v in enc.items()},
            "decode_rtf": {k: v / dur if k != "n" else v for k, v in dec.items()},
            "peak_memory_mb": mem.peak_bytes / 2 ** 20,
            "batch_throughput_audio_s_per_s": args.batch_size * dur / both["median"],
        }
    return res


def length_scaling(cut, lengths: Sequence[float], args) -> Dict:
    """Encode time vs audio length at the middle setting; ALMTokenizer split into conv
    (patchify) and Transformer-encoder time."""
    from espnet2_almtok.bench.measure import timeit

    s = cut.settings[len(cut.settings) // 2]
    out = {"setting": s.label, "points": []}
    for sec in lengths:
        x = (torch.randn(1, 1, int(sec * cut.fs)) * 0.1).to(args.device)
        point = {"seconds": sec, "encode_s": timeit(lambda: cut.encode(x, s), max(1, args.repeats // 2), 1, args.device)["median"]}
        if cut.kind == "almtok":
            g = cut.codec.generator
            w = s.kwargs["window"]
            xp = g.pad_to_window(x, w)
            with torch.no_grad():
                frames = g.patchify(xp).transpose(1, 2)
                point["patchify_conv_s"] = timeit(lambda: g.patchify(xp), 2, 1, args.device)["median"]
                point["encoder_transformer_s"] = timeit(lambda: g.encode_frames(frames, w), 2, 1, args.device)["median"]
            point["encoder_sequence_length"] = frames.shape[1] // w * (w + 1)
        out["points"].append(point)
    return out


def quality(cut, test, args) -> Dict:
    from espnet2_almtok.recipe.score import Scorer, average

    scorer = Scorer(cut.fs)
    res = {}
    for s in cut.settings:
        rows = []
        for _, _, wav in test:
            hyp = cut.decode(cut.encode(wav.view(1, 1, -1).to(args.device), s), s).view(-1).cpu()
            rows.append(scorer(wav, hyp[: wav.numel()]))
        res[s.label] = {m: v["mean"] for m, v in average(rows).items()}
    return res


def speaker_probe(cut, train, test, args) -> Dict:
    """Logistic regression on bag-of-tokens histograms of the first codebook (frozen codec)."""
    s = cut.settings[len(cut.settings) // 2]
    k = cut.codebook_size

    def features(data):
        feats = []
        for _, _, wav in data:
            tokens = cut.first_codebook(cut.encode(wav.view(1, 1, -1).to(args.device), s))[0].cpu()
            feats.append(torch.bincount(tokens, minlength=k).float() / tokens.numel())
        return torch.stack(feats)

    speakers = sorted({spk for _, spk, _ in train})
    test = [t for t in test if t[1] in speakers]
    if len(speakers) < 2 or not test:
        return {"note": "needs >= 2 speakers shared by train and test"}
    xtr, xte = features(train), features(test)
    ytr = torch.tensor([speakers.index(spk) for _, spk, _ in train])
    yte = torch.tensor([speakers.index(spk) for _, spk, _ in test])
    torch.manual_seed(args.seed)
    clf = torch.nn.Linear(k, len(speakers))
    opt = torch.optim.Adam(clf.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(xtr * k ** 0.5), ytr).backward()
        opt.step()
    acc = float((clf(xte * k ** 0.5).argmax(1) == yte).float().mean())
    return {"setting": s.label, "accuracy": acc, "chance": 1 / len(speakers), "n_train": len(train),
            "n_test": len(test), "n_speakers": len(speakers)}


def throughput_entry(config: Path, cut, times: List[float], batches) -> Dict:
    """The training-throughput record of ``times`` (per G+D step; the first is warm-up)."""
    steady = sorted(times[1:] or times)
    med = steady[len(steady) // 2]
    return {"config": _rel(config), "generator_params": cut.generator_params, "step_s_median": med,
            "audio_s_per_wall_s": batches[0].numel() / cut.fs / med, "batch": list(batches[0].shape),
            "steps": len(times)}


def training_throughput(config: Path, batches, args) -> Dict:
    from espnet2_almtok.bench.adapters import CodecUnderTest
    from espnet2_almtok.bench.measure import train_steps

    cut = CodecUnderTest(config.stem, config, args.device)
    return throughput_entry(config, cut, train_steps(cut.codec, batches, device=args.device), batches)


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------------------------- report
def machine_info(args) -> Dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": args.device}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown(results: Dict) -> str:
    m = results["machine"]
    lines = [f"# Codec benchmark ({'quick smoke run' if results['quick'] else 'full run'})", "",
             f"Machine: {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} "
             f"threads, device {m['device']}{(' (' + m['gpu'] + ')') if 'gpu' in m else ''}. "
             f"Data: {results['data']}. Training budget: {results['budget']}.", "",
             "| codec | params (G) | setting | tokens/s | codes/s | bps | enc RTF (median [p25-p75]) | dec RTF | "
             "batch x{} audio s/s | peak MB | mel dist | STFT dist | PESQ | STOI |".format(results["batch_size"]),
             "|" + "---|" * 14]
    for name, r in results["codecs"].items():
        for label, s in r["speed"].items():
            q = r["quality"].get(label, {})
            e, d = s["encode_rtf"], s["decode_rtf"]
            lines.append(
                f"| {name} | {r['generator_params'] / 1e6:.2f} M | {label} | {s['frames_per_s']:.2f} | "
                f"{s['codes_per_s']:.1f} | {s['bitrate']:.0f} | {e['median']:.4f} [{e['p25']:.4f}-{e['p75']:.4f}] | "
                f"{d['median']:.4f} | {s['batch_throughput_audio_s_per_s']:.1f} | {s['peak_memory_mb']:.1f} | "
                f"{q.get('mel_distance', float('nan')):.3f} | {q.get('stft_distance', float('nan')):.3f} | "
                f"{q.get('pesq_wb', float('nan')):.2f} | {q.get('stoi', float('nan')):.3f} |")
    lines += ["", "## Speaker-identity probe (frozen first-codebook tokens, bag-of-tokens logistic regression)", "",
              "| codec | setting | accuracy | chance |", "|---|---|---|---|"]
    for name, r in results["codecs"].items():
        p = r["probe"]
        if "accuracy" in p:
            lines.append(f"| {name} | {p['setting']} | {p['accuracy']:.3f} | {p['chance']:.3f} |")
    lines += ["", "## Training throughput (generator + discriminator step)", "",
              "| config | params (G) | batch | step s (median) | audio s / wall s |", "|---|---|---|---|---|"]
    for t in results["training"]:
        lines.append(f"| {t['config']} | {t['generator_params'] / 1e6:.1f} M | {t['batch']} | "
                     f"{t['step_s_median']:.3f} | {t['audio_s_per_wall_s']:.2f} |")
    lines += ["", "## Encode time vs audio length", "",
              "| codec | setting | " + " | ".join(f"{p['seconds']:g} s" for p in
                                                   next(iter(results["codecs"].values()))["scaling"]["points"]) + " |",
              "|---|---|" + "---|" * len(next(iter(results["codecs"].values()))["scaling"]["points"])]
    for name, r in results["codecs"].items():
        sc = r["scaling"]
        lines.append(f"| {name} | {sc['setting']} | " + " | ".join(f"{p['encode_s']:.3f}" for p in sc["points"]) + " |")
    alm = results["codecs"].get("almtok", {}).get("scaling")
    if alm:
        lines += ["", "ALMTokenizer encode split (s): " + ", ".join(
            f"{p['seconds']:g} s audio: conv {p['patchify_conv_s']:.3f} / Transformer {p['encoder_transformer_s']:.3f} "
            f"(sequence {p['encoder_sequence_length']})" for p in alm["points"])]
    return "\n".join(lines) + "\n"


def plot(results: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results["codecs"].items():
        pts = sorted((s["bitrate"], r["quality"][label]["mel_distance"]) for label, s in r["speed"].items()
                     if label in r["quality"])
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bitrate (bps)")
    ax.set_ylabel("mel distance (lower is better)")
    steps = results["budget"].split(" G+D")[0]
    ax.set_title("Quality vs bitrate (untrained, --quick)" if results["quick"] else
                 f"Quality vs bitrate, equal budget: {steps} training steps")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="smoke run: seconds of audio, 1 repeat, untrained")
    p.add_argument("--codecs", nargs="+", default=list(CODECS), choices=CODECS)
    p.add_argument("--config_dir", type=Path, default=ROOT / "conf" / "benchmark")
    p.add_argument("--train_scp", type=Path, default=RECIPE_DUMP / "train" / "wav.scp")
    p.add_argument("--test_scp", type=Path, default=RECIPE_DUMP / "test" / "wav.scp")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8, help="clips per batch for the throughput figures")
    p.add_argument("--clip_seconds", type=float, default=5.0, help="clip length for the RTF figures")
    p.add_argument("--train_steps", type=int, default=300, help="the equal training budget per codec")
    p.add_argument("--train_batch", type=int, default=4)
    p.add_argument("--train_seconds", type=float, default=1.0)
    p.add_argument("--lengths", type=float, nargs="+", default=[1, 5, 10, 30, 60])
    p.add_argument("--seed", type=int, default=0)
    sp = p.add_argument_group("speed mode (--speed)")
    sp.add_argument("--speed", action="store_true", help="write the speed table (speed.json, speed.md) only")
    sp.add_argument("--speed_lengths", type=float, nargs="+", default=[1, 10, 60, 600], help="clip seconds")
    sp.add_argument("--speed_window", type=int, default=4, help="ALMTokenizer's w (12.5 tokens/s at 4)")
    sp.add_argument("--speed_repeats", type=int, default=3, help="timed repeats up to 60 s (1 beyond)")
    sp.add_argument("--speed_files", type=int, default=64, help="short files for the throughput figure")
    sp.add_argument("--speed_file_seconds", type=float, nargs=2, default=[1.0, 5.0], help="their length range")
    sp.add_argument("--speed_batch", type=int, default=16, help="files per batch for the throughput figure")
    sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="ALMTokenizer's precision (autocast); ESPnet's codecs run in float32")
    sp.add_argument("--max_rss_gb", type=float, default=12.0,
                    help="a measurement process using more memory is stopped and recorded as such")
    sp.add_argument("--speed_timeout", type=float, default=3600.0, help="seconds per measurement process")
    sp.add_argument("--speed_merge", action="store_true",
                    help="replace only the --codecs rows of the speed.json already in --output_dir (made with the "
                         "same lengths, window, dtype, device and threads); both commands are recorded")
    return p


def speed_main(args, argv: Sequence[str]) -> None:
    """``--speed``: the speed table, written to ``speed.json`` and ``speed.md`` in --output_dir."""
    import shlex

    from espnet2_almtok.bench import speed

    if args.quick:
        args.speed_lengths, args.speed_repeats = [0.5, 1.5], 1
        args.speed_files, args.speed_file_seconds, args.speed_batch = 4, [0.3, 0.6], 2
    command = "python -m espnet2_almtok.bin.benchmark " + shlex.join(argv)
    results = speed.run(args.quick, args.device, args.dtype, args.speed_lengths, args.speed_window,
                        args.speed_repeats, args.threads, args.speed_files, args.speed_file_seconds,
                        args.speed_batch, args.max_rss_gb, args.speed_timeout, systems=args.codecs,
                        log=logging.info)
    results["quick"] = args.quick
    results["machine"] = machine_info(args)
    results["command"] = command
    results["runs"] = [{"command": command, "systems": list(results["systems"]),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}]
    if args.speed_merge:
        results = speed.merge(args.output_dir / "speed.json", results)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / "speed.json", json.dumps(results, indent=2))
    md = speed.markdown(results, results["machine"], command)
    atomic_write_text(args.output_dir / "speed.md", md)
    print(md)


def main(argv: Sequence[str] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (benchmark) %(levelname)s: %(message)s")
    import_quietly("espnet2_almtok.tasks.codec")
    from espnet2_almtok.bench.adapters import CodecUnderTest
    from espnet2_almtok.bench.measure import train_steps

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speed:
        return speed_main(args, argv)
    if args.quick:
        args.repeats, args.warmup, args.train_steps = 1, 0, 0
        args.clip_seconds, args.lengths, args.batch_size = 1.0, [1.0, 2.0], 2
        args.train_batch, args.train_seconds = 1, 0.5
    fs = 16000
    if args.train_scp.is_file() and args.test_scp.is_file():
        train, test = load_set(args.train_scp, fs), load_set(args.test_scp, fs)
        data_desc = f"{_rel(args.train_scp)} ({len(train)} speech utts) / {_rel(args.test_scp)} ({len(test)})"
    elif args.quick:
        train, test = synthetic_set(9, 1.5, fs, args.seed), synthetic_set(6, 1.5, fs, args.seed + 1)
        data_desc = "synthetic harmonic clips (--quick; the recipe's dump is absent)"
    else:
        raise FileNotFoundError(f"{args.train_scp} / {args.test_scp} not found: run "
                                "`egs2/almtok/codec1/run.sh --stop_stage 2` first, or pass --train_scp/--test_scp")
    clip = torch.cat([w for _, _, w in test])[: int(args.clip_seconds * fs)]
    if clip.numel() < args.clip_seconds * fs:
        clip = clip.repeat(math.ceil(args.clip_seconds * fs / clip.numel()))[: int(args.clip_seconds * fs)]
    batches = crop_batches(train, args.train_steps, args.train_batch, args.train_seconds, fs, args.seed)
    budget = (f"{args.train_steps} G+D steps of {args.train_batch} x {args.train_seconds:g} s crops, "
              "Adam lr 1e-3, seed {}".format(args.seed)) if args.train_steps else "no training (untrained models)"

    results = {"quick": args.quick, "machine": machine_info(args), "data": data_desc, "budget": budget,
               "batch_size": args.batch_size, "codecs": {}, "training": []}
    for name in args.codecs:
        torch.manual_seed(args.seed)
        cut = CodecUnderTest(name, args.config_dir / f"{name}.yaml", args.device)
        r = {"config": cut.config, "generator_params": cut.generator_params,
             "discriminator_params": cut.discriminator_params}
        if batches:
            bar = progress(total=len(batches), desc=f"train {name}", unit="step")
            times = train_steps(cut.codec, batches, device=args.device, on_step=lambda i, s: bar.update())
            bar.close()
            results["training"].append(throughput_entry(args.config_dir / f"{name}.yaml", cut, times, batches))
        logging.info(f"{name}: speed")
        r["speed"] = speed(cut, clip, args)
        logging.info(f"{name}: quality")
        r["quality"] = quality(cut, test, args)
        logging.info(f"{name}: probe")
        r["probe"] = speaker_probe(cut, train, test, args)
        logging.info(f"{name}: length scaling")
        r["scaling"] = length_scaling(cut, args.lengths, args)
        results["codecs"][name] = r
    n_tp = 2 if args.quick else 5
    tp_batches = crop_batches(train, n_tp, args.train_batch, args.train_seconds, fs, args.seed)
    for cfg in ("train_almtok_debug.yaml", "train_almtok_paper.yaml"):
        if args.quick and "paper" in cfg:
            tp_batches = tp_batches[:1]  # one step of the 110 M model: a shape/wiring check only
        logging.info(f"training throughput: {cfg}")
        results["training"].append(training_throughput(ROOT / "conf" / "tuning" / cfg, tp_batches, args))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(args.output_dir / "results.md", markdown(results))
    plot(results, args.output_dir / "quality_vs_bitrate.png")
    print(markdown(results))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How far a few CPU-minutes of reconstruction training get the generator, part by part.

    python -m espnet2_almtok.bench.learning_floor --path conv --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path transformer --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path vq --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path frames --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path pooled --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path transformer --window 2 --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path vq --attention_bias alibi --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path vq --query_shortcut --cpu_minutes 3
    python -m espnet2_almtok.bench.learning_floor --path vq --query_shortcut --mae --cpu_minutes 6
    python -m espnet2_almtok.bench.learning_floor --path vq --query_shortcut --mae --mae_loss \
        --mae_pass separate --cpu_minutes 6

Trains ``bin/compare``'s ``almtok`` generator (``conf/benchmark/almtok.yaml``; frozen MFCC priors
from ``--work_dir``, extracted there if missing) with the reconstruction losses only (15 x
multi-scale mel + multi-resolution STFT, plus the VQ terms on the ``vq`` path; no GAN, MAE or
AR: the cheapest objective, about 4x the steps of a G+D step per CPU-second) along one path
(``--mae`` masks the encoder input as stage 1 does, ``--mae_loss`` adds the MAE loss,
``--mae_pass separate`` moves both to a second encoder pass):

- ``conv``: patchify -> de-patchify, nothing between (no Transformer, no bottleneck);
- ``transformer``: + the query Transformer encoder and decoder, queries unquantized;
- ``vq``: the whole generator, as it encodes and decodes;
- ``frames``: the encoder and decoder Transformers over the patchified frames themselves (no
  query tokens, no mask tokens, no quantizer): the Transformers without the query bottleneck;
- ``pooled``: patchify -> the mean of each group of ``w`` frames, repeated ``w`` times ->
  de-patchify (no Transformer, no quantizer): the token rate's time bottleneck alone.

It prints the mel distance (``recipe.score``'s, lower is better) of that path's output on
English dev clips at w = 4 (or ``--window``) after each quarter of the budget (with how much the
patchified frames and the query outputs still vary across time: :func:`spreads`), beside the same distance for
simple degradations of the original (half amplitude, a 9-tap moving average, white noise at
0.01): a scale for what the numbers mean. What it answers: whether a short CPU budget is
limited by the quantizer, the Transformer or the waveform convolutions themselves.
"""

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from espnet2_almtok.codec.generator import MAE_PASSES
from espnet2_almtok.codec.transformer import ATTENTION_BIASES

PATHS = ("conv", "transformer", "vq", "frames", "pooled")


def degradations() -> Dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Reference degradations of a ``(T,)`` waveform, seeded."""
    gen = torch.Generator().manual_seed(0)
    return {
        "half amplitude": lambda w: 0.5 * w,
        "9-tap moving average": lambda w: torch.nn.functional.avg_pool1d(
            w.view(1, 1, -1), 9, 1, 4, count_include_pad=False).view(-1),
        "white noise 0.01": lambda w: w + 0.01 * torch.randn(w.shape, generator=gen),
    }


def reconstruct(generator, wav: torch.Tensor, window: int, path: str, mae: bool = False):
    """``wav`` ``(B, 1, T)`` -> (resynthesis ``(B, 1, T)``, VQ loss terms, MAE loss) along ``path``;
    with ``mae`` (``vq`` path only) the encoder input has the MAE share of its frames masked, as
    in stage 1 of the recipe (in the pass that the generator's ``mae_pass`` says)."""
    if mae and path != "vq":
        raise ValueError(f"MAE masking needs the whole generator (path vq), not {path!r}")
    if path == "vq":
        out = generator(wav, window, use_mae=mae)
        return out["resyn"], out["commit"] + out["codebook"], out["mae"]
    x = generator.pad_to_window(wav, window)
    frames = generator.patchify_frames(x, x.shape[-1] // generator.hop_length)  # (B, T', C)
    if path == "conv":
        resyn = generator.depatchify(frames.transpose(1, 2))
    elif path == "pooled":  # each frame replaced by the mean of its w-frame group: a w-fold time bottleneck
        b, t, c = frames.shape
        pooled = frames.reshape(b, t // window, window, c).mean(2).repeat_interleave(window, dim=1)
        resyn = generator.depatchify(pooled.transpose(1, 2))
    elif path == "frames":
        resyn = generator.depatchify(generator.decoder(generator.encoder(frames)).transpose(1, 2))
    else:
        queries, _ = generator.encode_frames(frames, window)
        resyn = generator.decode_latents(queries, window)
    return resyn[..., : wav.shape[-1]], wav.new_zeros(()), wav.new_zeros(())


def device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def mel_distance(generator, clips: List[torch.Tensor], path: str, window: int = 4) -> float:
    from espnet2_almtok.recipe.score import Scorer

    scorer = Scorer(16000)
    generator.eval()
    device = device_of(generator)
    with torch.no_grad():
        d = [scorer.mel_distance(c, reconstruct(generator, c.view(1, 1, -1).to(device), window, path)[0].view(-1).float().cpu())
             for c in clips]
    generator.train()
    return float(np.mean(d))


def spreads(generator, clip: torch.Tensor, window: int = 4) -> Dict[str, float]:
    """How much of the input survives the front end and the encoder, on one ``(T,)`` clip: the
    spread across time of the patchified frames (``frames``, after the frame norm) and of the
    encoder's query outputs (``queries``), each as the mean distance of a frame / query from their
    mean over the clip, divided by the norm of that mean (0: the same vector everywhere)."""
    def spread(x: torch.Tensor) -> float:  # (1, T, C)
        mean = x.mean(1, keepdim=True)
        return float((x - mean).norm(dim=-1).mean() / mean.norm().clamp(min=1e-12))

    generator.eval()
    with torch.no_grad():
        x = generator.pad_to_window(clip.view(1, 1, -1).to(device_of(generator)), window)
        frames = generator.patchify_frames(x, x.shape[-1] // generator.hop_length)
        queries = generator.encode_frames(frames, window)[0]
    generator.train()
    return {"frames": spread(frames), "queries": spread(queries)}


def train(generator, codec, sampler, dev: List[torch.Tensor], path: str, cpu_seconds: float, lr: float,
          points: int = 4, seed: int = 0, window: Optional[int] = None, mae: bool = False,
          mae_loss: bool = False, betas=(0.5, 0.9), warmup_steps: int = 0, clock: str = "cpu") -> List[Dict[str, float]]:
    """Reconstruction-only training for ``cpu_seconds`` of CPU time (``clock="wall"``: of wall
    time, for a GPU, the points then say ``wall_s``), on the generator's device; the dev mel distance at the
    start and after each of ``points`` equal chunks (evaluations not counted). ``window``: train
    and score at this w only (default: w sampled from the model's windows per step, scored at 4);
    ``mae``: train with the encoder input MAE-masked (scored clean); ``mae_loss``: add the MAE
    loss (weight 1, the recipe's ``lambda_mae``); ``betas``: Adam's; ``warmup_steps``: a linear
    per-step warm-up of the learning rate from 0 (then constant)."""
    rng = np.random.default_rng(seed)
    windows = [generator.check_window(window)] if window else generator.windows
    score_window = window or 4
    opt = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=lr, betas=tuple(betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0)
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock={clock!r}: cpu or wall")
    now = time.process_time if clock == "cpu" else time.perf_counter
    device = device_of(generator)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def record(steps: int, used: float) -> Dict:
        return {"steps": steps, f"{clock}_s": used, "dev_mel": mel_distance(generator, dev, path, score_window),
                "spread": spreads(generator, dev[0], score_window)}

    curve = [record(0, 0.0)]
    steps, used = 0, 0.0
    generator.train()
    for point in range(1, points + 1):
        t0 = now()
        while used + now() - t0 < cpu_seconds * point / points:
            wav = sampler().unsqueeze(1).to(device)  # (B, 1, T)
            resyn, vq_loss, mae_term = reconstruct(generator, wav, int(rng.choice(windows)), path, mae=mae)
            loss = 15.0 * codec.mel_loss(resyn, wav) + codec.stft_loss(resyn, wav) + vq_loss
            if mae_loss:
                loss = loss + mae_term
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
        sync()
        used += now() - t0
        curve.append(record(steps, used))
    return curve


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=Path("egs2/almtok/codec1/dump/raw"))
    p.add_argument("--work_dir", type=Path, default=Path("exp/compare_norm"), help="bin/compare's (its priors/)")
    p.add_argument("--path", choices=PATHS, default="vq")
    p.add_argument("--cpu_minutes", type=float, default=3.0)
    p.add_argument("--window", type=int, default=None, help="train and score at this w only (default: sampled per step, scored at 4)")
    p.add_argument("--attention_bias", choices=ATTENTION_BIASES, default=None,
                   help="override the generator's attention_bias (codec/transformer.py)")
    p.add_argument("--query_shortcut", nargs="?", const="both", choices=("both", "encoder", "decoder"), default=None,
                   help="turn on the generator's query_shortcut (codec/query.py: each query's own frames reach it "
                        "without attention), on both sides (no value) or one")
    p.add_argument("--mae", action="store_true",
                   help="train with the encoder input MAE-masked (generator mae_mask_ratio; path vq only), as stage 1 does")
    p.add_argument("--mae_loss", action="store_true", help="with --mae: also train on the MAE loss (weight 1)")
    p.add_argument("--mae_pass", choices=MAE_PASSES, default="shared",
                   help="with --mae: the generator's mae_pass (shared: the masked pass is also decoded; "
                        "separate: a second, masked encoder pass feeds only the MAE loss)")
    p.add_argument("--frame_norm", choices=("time", "layer", "none"), default=None,
                   help="override the generator's frame_norm (codec/patchify.py)")
    p.add_argument("--encoder_local_layers", type=int, default=None,
                   help="override the generator's encoder_local_layers (first layers attend within each window group)")
    p.add_argument("--decoder_local_layers", type=int, default=None,
                   help="override the generator's decoder_local_layers")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.9), help="Adam's betas")
    p.add_argument("--warmup_steps", type=int, default=0, help="linear per-step LR warm-up (0: none)")
    p.add_argument("--crop_s", type=float, default=0.5, help="training crop length (s)")
    p.add_argument("--batch", type=int, default=4, help="training crops per step")
    p.add_argument("--seed", type=int, default=0, help="weights, crops and window draws")
    p.add_argument("--dev_clips", type=int, default=8, help="English speech clips of dev/ scored")
    p.add_argument("--output", type=Path, default=None, help="also write the curve here (JSON)")
    args = p.parse_args(argv)
    if args.mae and args.path != "vq":
        p.error(f"--mae masks the encoder input of the whole generator: use it with --path vq, not {args.path}")
    if (args.mae_loss or args.mae_pass != "shared") and not args.mae:
        p.error("--mae_loss and --mae_pass need --mae (the MAE masking they refer to)")
    if args.mae_pass == "separate" and not args.mae_loss:
        p.error("--mae_pass separate without --mae_loss trains nothing on the masked pass: add --mae_loss")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from espnet2_almtok.bench import compare as C
    from espnet2_almtok.fileio import atomic_write_text
    from espnet2_almtok.recipe.score import Scorer

    generator_overrides = {}
    if args.attention_bias:
        generator_overrides["attention_bias"] = args.attention_bias
    if args.query_shortcut:
        generator_overrides["query_shortcut"] = True if args.query_shortcut == "both" else args.query_shortcut
    if args.mae_pass != "shared":
        generator_overrides["mae_pass"] = args.mae_pass
    for key in ("frame_norm", "encoder_local_layers", "decoder_local_layers"):
        if getattr(args, key) is not None:
            generator_overrides[key] = getattr(args, key)
    cut, train_clips = C.almtok_for_diagnosis(args.data_dir, args.work_dir, generator_overrides=generator_overrides,
                                              seed=args.seed)
    dev = [c.wav for c in C.english_speech(C.load_dir(args.data_dir / "dev"))[: args.dev_clips]]
    if not dev:
        raise ValueError(f"{args.data_dir}/dev has no English speech clip (utt2category speech, utt2lang en)")
    scorer = Scorer(16000)
    scale = {name: float(np.mean([scorer.mel_distance(c, f(c)) for c in dev])) for name, f in degradations().items()}
    for name, v in scale.items():
        print(f"original, {name}: dev mel {v:.3f}", flush=True)
    curve = train(cut.codec.generator, cut.codec, C.CropSampler(train_clips, args.batch, args.crop_s, args.seed), dev,
                  args.path, args.cpu_minutes * 60, args.lr, seed=args.seed, window=args.window, mae=args.mae,
                  mae_loss=args.mae_loss, betas=args.betas, warmup_steps=args.warmup_steps)
    for c in curve:
        print(f"{args.path}: step {c['steps']}, {c['cpu_s']:.0f} CPU-s, dev mel {c['dev_mel']:.3f}, spread across time "
              f"of the frames {c['spread']['frames']:.3f}, of the queries {c['spread']['queries']:.3f}", flush=True)
    if args.output:
        atomic_write_text(args.output, json.dumps({"path": args.path, "window": args.window,
                                                   "attention_bias": args.attention_bias,
                                                   "query_shortcut": args.query_shortcut, "mae": args.mae,
                                                   "mae_loss": args.mae_loss, "mae_pass": args.mae_pass, "lr": args.lr,
                                                   "frame_norm": args.frame_norm,
                                                   "encoder_local_layers": args.encoder_local_layers,
                                                   "decoder_local_layers": args.decoder_local_layers,
                                                   "betas": list(args.betas), "warmup_steps": args.warmup_steps,
                                                   "crop_s": args.crop_s, "batch": args.batch, "seed": args.seed,
                                                   "degradations": scale,
                                                   "curve": curve}, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Codes in use per codebook along a short ALMTokenizer training (a diagnostic of codebook collapse).

    python -m espnet2_almtok.bench.code_usage_trace --cpu_minutes 3
    python -m espnet2_almtok.bench.code_usage_trace --cpu_minutes 3 --codebook_input_norm false --frame_norm false
    python -m espnet2_almtok.bench.code_usage_trace --cpu_minutes 3 --codebook_input_norm false --lambda_commit 0.05

Trains ``bin/compare``'s ``almtok`` system (frozen MFCC priors from ``--work_dir``, Adam 5e-4,
4 x 0.5 s crops, one thread) on ``--data_dir``'s training set and prints, after each quarter of
the CPU budget, the distinct codes each codebook uses at w=4 on the first 15 English test prompts.
"""

import argparse
import warnings
from pathlib import Path

import torch
from espnet2.utils.types import str2bool


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=Path("egs2/almtok/codec1/dump/raw"))
    p.add_argument("--work_dir", type=Path, default=Path("exp/compare"), help="bin/compare's (its priors/)")
    p.add_argument("--lambda_commit", type=float, default=1.0)
    p.add_argument("--cpu_minutes", type=float, default=3.0)
    p.add_argument("--codebook_input_norm", type=str2bool, default=True, help="the generator option of that name")
    p.add_argument("--frame_norm", type=str2bool, default=True, help="the generator option of that name")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from espnet2_almtok.bench.measure import BudgetTrainer
    from espnet2_almtok.bench import compare as C

    gen = {"codebook_input_norm": args.codebook_input_norm, "frame_norm": args.frame_norm}
    cut, train = C.almtok_for_diagnosis(args.data_dir, args.work_dir, {"lambda_commit": args.lambda_commit}, gen)
    test = C.english_speech(C.load_dir(args.data_dir / "test"))[:15]
    label = f"lambda_commit {args.lambda_commit}, codebook_input_norm {args.codebook_input_norm}, frame_norm {args.frame_norm}"
    setting = next(s for s in cut.settings if s.label == "w=4")

    def usage():
        cut.codec.eval()
        with torch.no_grad():
            codes = [cut.encode(c.wav.view(1, 1, -1), setting)[: setting.n_q, 0] for c in test]
        cut.codec.train()
        return [layer["distinct"] for layer in C.code_usage(codes, int(cut.codebook_size))["layers"]]

    def frame_scale() -> str:
        """Mean norm of the untrained model's patchified frames on the test prompts, against the
        norm of the sinusoidal positions the encoder adds to them (what ``frame_norm`` balances)."""
        from espnet2_almtok.codec.transformer import sinusoidal_positions

        g = cut.codec.generator
        with torch.no_grad():
            norms = [g.patchify_frames(w, w.shape[-1] // g.hop_length).norm(dim=-1).mean()
                     for w in (g.pad_to_window(c.wav.view(1, 1, -1), 4) for c in test)]
            pos = sinusoidal_positions(16, g.query_token.numel()).norm(dim=-1).mean()
        return f"frames of norm {float(torch.stack(norms).mean()):.2f}, positions of norm {float(pos):.2f}"

    print(f"{label}: untrained {frame_scale()}", flush=True)
    sampler = C.CropSampler(train, 4, 0.5, 0)
    trainer = BudgetTrainer(cut.codec, lr=5e-4)
    print(f"{label}: step 0, codes in use {usage()}", flush=True)
    for _ in range(4):
        trainer.run(args.cpu_minutes * 60 / 4, sampler)
        print(f"{label}: step {trainer.steps}, codes in use {usage()}", flush=True)


if __name__ == "__main__":
    main()

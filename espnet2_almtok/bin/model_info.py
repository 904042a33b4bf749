#!/usr/bin/env python3
"""Parameter counts, token rates and bitrates of a training config (the README's figures).

    python -m espnet2_almtok.bin.model_info --config conf/tuning/train_almtok_paper.yaml [--markdown]
"""

import argparse
from typing import Sequence

import torch


def count(module: torch.nn.Module, trainable: bool = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--markdown", action="store_true", help="print the rate table as markdown")
    args = p.parse_args(argv)
    from espnet2_almtok.api import ALMTokenizer

    tok = ALMTokenizer.from_config(args.config, use_priors=False)
    gen, disc = tok.codec.generator, tok.codec.discriminator
    frozen = sum(layer.codebook.numel() for layer in gen.quantizer.layers if layer.frozen)
    print(f"config: {args.config}")
    heads = count(gen.mae_head) + count(gen.ar_head)  # training-only
    print(f"generator: {count(gen) / 1e6:.1f} M parameters, {(count(gen) - heads) / 1e6:.1f} M used at "
          f"inference (MAE/AR heads are training-only); {frozen / 1e6:.2f} M frozen prior codebooks")
    for name in ("patchify", "encoder", "quantizer", "decoder", "depatchify", "mae_head", "ar_head"):
        print(f"  {name}: {count(getattr(gen, name)) / 1e6:.2f} M")
    print(f"discriminator: {count(disc) / 1e6:.1f} M parameters")
    print(f"sample rate {tok.sample_rate} Hz, frame rate {gen.frame_rate:g} Hz, n_q {tok.n_q}, "
          f"codebook size {tok.codebook_size}")
    rows = [(w, tok.token_rate(w), tok.bitrate(w)) for w in tok.windows]
    if args.markdown:
        print("\n| w | tokens/s | codes/s (x n_q) | bitrate (bps) |\n|---|---|---|---|")
        for w, tr, br in rows:
            print(f"| {w} | {tr:.2f} | {tr * tok.n_q:.2f} | {br:.1f} |")
    else:
        for w, tr, br in rows:
            print(f"w={w:2d}: {tr:6.2f} tokens/s, {br:7.1f} bps")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Parameter counts, token rates and bitrates of a training config (the README's figures).

    python -m espnet2_almtok.bin.model_info --config conf/tuning/train_almtok_paper.yaml [--markdown]   # 24 kHz
    python -m espnet2_almtok.bin.model_info --config conf/tuning/train_almtok_speech16k.yaml          # 16 kHz
    python -m espnet2_almtok.bin.model_info --config conf/tuning/train_lm_base.yaml \
        [--token_list dump/lm/<codec>/tokens.txt | --nbpe 5000 --n_q 3 --codebook_size 2048]

An LM's size depends on its vocabulary: a trained LM's config.yaml carries its token list; for a
training config give the recipe's token list, or the sizes to assume.
"""

import argparse
from typing import Sequence

import torch


def count(module: torch.nn.Module, trainable: bool = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def read_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """The YAML mapping in ``path``; a missing, unreadable or non-YAML file exits with its name."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            conf = yaml.safe_load(f)
    except OSError as e:
        parser.error(f"--config {path}: cannot read it ({e.strerror})")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        parser.error(f"--config {path} is not a YAML file ({str(e).splitlines()[0]}); give a training config "
                     "(conf/tuning/*.yaml) or an exp dir's config.yaml")
    if not isinstance(conf, dict) or not ("lm_conf" in conf or "codec_conf" in conf):
        parser.error(f"--config {path} holds no codec_conf or lm_conf: give a training config "
                     "(conf/tuning/*.yaml) or an exp dir's config.yaml")
    problem = config_problem(conf)
    if problem:
        parser.error(f"--config {path}: {problem}; fix it in the config")
    return conf


# generator_params keys that count something: each must be a whole number >= 1 (0 codebooks, say,
# would build a model of 0 bps, or fail deep inside torch)
POSITIVE_GENERATOR_INTS = ("sample_rate", "hidden_dim", "patch_channels", "encoder_layers", "decoder_layers",
                           "num_heads", "ff_mult", "n_q", "codebook_size", "codebook_dim", "n_mels", "ar_dim")
POSITIVE_GENERATOR_LISTS = ("patch_strides", "windows")


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def config_problem(conf: dict) -> "str | None":
    """What makes a config's ``codec_conf`` / ``lm_conf`` unusable (naming the key and the value
    found), or None. Only the keys present are checked: the others take the model's defaults."""
    for section in ("codec_conf", "lm_conf"):
        if section in conf and not isinstance(conf[section], (dict, type(None))):
            return f"{section} must be a mapping of options, got {type(conf[section]).__name__} {conf[section]!r}"
    codec = conf.get("codec_conf") or {}
    for key in ("generator_params", "discriminator_params"):
        if key in codec and not isinstance(codec[key], (dict, type(None))):
            return (f"codec_conf.{key} must be a mapping of options, got "
                    f"{type(codec[key]).__name__} {codec[key]!r}")
    for key in ("sampling_rate", "inference_window"):
        if key in codec and not _is_positive_int(codec[key]):
            return f"codec_conf.{key} must be a whole number >= 1, got {codec[key]!r}"
    gen = codec.get("generator_params") or {}
    for key in POSITIVE_GENERATOR_INTS:
        if key in gen and not _is_positive_int(gen[key]):
            return f"codec_conf.generator_params.{key} must be a whole number >= 1, got {gen[key]!r}"
    for key in POSITIVE_GENERATOR_LISTS:
        if key in gen and not (isinstance(gen[key], list) and gen[key] and all(map(_is_positive_int, gen[key]))):
            return f"codec_conf.generator_params.{key} must be a non-empty list of whole numbers >= 1, got {gen[key]!r}"
    windows = gen.get("windows")
    if isinstance(windows, list) and "inference_window" in codec and codec["inference_window"] not in windows:
        return (f"codec_conf.inference_window {codec['inference_window']} is not one of "
                f"codec_conf.generator_params.windows {windows}")
    return None


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--markdown", action="store_true", help="print the rate table as markdown")
    p.add_argument("--token_list", default=None, help="LM configs: the vocabulary (tokens.txt)")
    p.add_argument("--nbpe", type=int, default=5000, help="LM configs without --token_list: text pieces")
    p.add_argument("--n_q", type=int, default=3, help="LM configs without --token_list: codebooks")
    p.add_argument("--codebook_size", type=int, default=2048, help="LM configs without --token_list")
    args = p.parse_args(argv)
    for option in ("nbpe", "n_q", "codebook_size"):
        if getattr(args, option) < 1:
            p.error(f"--{option} must be >= 1, got {getattr(args, option)}")
    conf = read_config(p, args.config)
    if "lm_conf" in conf:
        return lm_info(conf, args)
    from espnet2_almtok.api import ALMTokenizer
    from espnet2_almtok.codec.almtok import ALMTokenizerCodec

    tok = ALMTokenizer.from_config(args.config, use_priors=False)  # inference: generator only
    codec_conf = dict(conf.get("codec_conf") or {})
    codec_conf["generator_params"] = {**codec_conf.get("generator_params", {}), "codebook_init": None}
    codec = ALMTokenizerCodec(**codec_conf)  # training: with the heads and the discriminator
    gen, disc = codec.generator, codec.discriminator
    frozen = sum(layer.codebook.numel() for layer in gen.quantizer.layers if layer.frozen)
    print(f"config: {args.config}")
    heads = count(gen.mae_head) + count(gen.ar_head)  # training-only
    print(f"generator: {count(gen) / 1e6:.1f} M parameters, {(count(gen) - heads) / 1e6:.1f} M used at "
          f"inference (MAE/AR heads are training-only); {frozen / 1e6:.2f} M frozen prior codebooks")
    for name in ("patchify", "encoder", "quantizer", "decoder", "depatchify", "mae_head", "ar_head"):
        print(f"  {name}: {count(getattr(gen, name)) / 1e6:.2f} M")
    print(f"discriminator: {count(disc) / 1e6:.1f} M parameters")
    print(f"ALMTokenizer (inference) holds {tok.num_parameters / 1e6:.1f} M parameters")
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


def lm_info(conf: dict, args: argparse.Namespace) -> None:
    from espnet2_almtok.lm.model import build_lm
    from espnet2_almtok.lm.vocab import Vocabulary

    if args.token_list:
        vocab = Vocabulary.from_token_list(args.token_list)
    elif isinstance(conf.get("token_list"), (list, str)):  # a trained LM's config.yaml saves its vocabulary
        vocab = Vocabulary.from_token_list(conf["token_list"])
    else:
        vocab = Vocabulary([f"<piece{i}>" for i in range(args.nbpe)], args.n_q, args.codebook_size)
    print(f"config: {args.config}")
    print(f"vocabulary: {len(vocab)} ids ({len(vocab.text_pieces)} text pieces, {vocab.n_q} x "
          f"{vocab.codebook_size} codes)")
    for layout in ("flat", "delay"):
        model = build_lm(vocab.token_list(), layout, conf["lm_conf"])
        mark = " (the config's)" if layout == conf.get("layout", "flat") else ""
        print(f"layout {layout}{mark}: {count(model) / 1e6:.1f} M parameters "
              f"({model.num_streams} output head(s))")


if __name__ == "__main__":
    main()

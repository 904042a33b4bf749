#!/usr/bin/env python3
"""Refuse a codec stage 2 whose generator is not stage 1's.

    python -m espnet2_almtok.recipe.check_stage2 exp/codec_X_stage1/config.yaml STAGE2_CONFIG

Stage 2 starts from stage 1's weights (``--init_param``). A generator option that adds no
parameter (``query_shortcut``, ``mae_pass``, ``windows``, ``attention_bias``...) would load
those weights without a complaint and silently train another model, e.g. when
``--stage1_args "--codec_conf generator_params.query_shortcut=true"`` is not repeated in
``--stage2_args``. ``run.sh`` stage 6 calls this on the two resolved configs (ESPnet's
``--print_config`` for stage 2) before it trains. The codec's own switches (``use_mae_loss``,
loss weights...) may differ: stage 2 changes them on purpose, and so may ``codebook_init``
(files read only to initialise the codebooks, which stage 2 takes from stage 1's weights).
"""

import argparse
import inspect
import sys
from pathlib import Path
from typing import Dict, List

import yaml

IGNORED = ("codebook_init",)  # read at initialisation only: stage 2 loads stage 1's codebooks


def generator_defaults() -> Dict:
    """The generator's constructor defaults: an option a config leaves out has this value."""
    from espnet2_almtok.codec.generator import ALMTokenizerGenerator

    return {k: p.default for k, p in inspect.signature(ALMTokenizerGenerator).parameters.items()
            if p.default is not inspect.Parameter.empty}


def generator_params(path: Path) -> Dict:
    """``codec_conf.generator_params`` of an ESPnet config, with the generator's defaults filled in."""
    from espnet2_almtok.config_stamp import check_config_stamp

    check_config_stamp(path)  # stage 1's config.yaml as trained, not as edited since
    conf = yaml.safe_load(Path(path).read_text()) or {}
    try:
        given = dict(conf["codec_conf"]["generator_params"])
    except (KeyError, TypeError):
        raise ValueError(f"{path}: no codec_conf.generator_params (is it an ESPnet codec config?)") from None
    # YAML has lists where the defaults have tuples: compare values, not container types
    return {k: list(v) if isinstance(v, tuple) else v for k, v in {**generator_defaults(), **given}.items()}


def differences(stage1: Dict, stage2: Dict) -> List[str]:
    """``key: stage-1 value -> stage-2 value`` for every generator option that differs."""
    return [f"{k}: {stage1.get(k, '(unset)')!r} -> {stage2.get(k, '(unset)')!r}"
            for k in sorted(set(stage1) | set(stage2)) if k not in IGNORED and stage1.get(k) != stage2.get(k)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage1_config", type=Path, help="stage 1's config.yaml (written by its training)")
    p.add_argument("stage2_config", type=Path, help="stage 2's resolved config (codec_train ... --print_config)")
    args = p.parse_args(argv)
    diff = differences(generator_params(args.stage1_config), generator_params(args.stage2_config))
    if diff:
        sys.exit(f"stage 2's generator is not stage 1's ({args.stage1_config}):\n  " + "\n  ".join(diff)
                 + "\nstage 2 starts from stage 1's weights: give both stages the same generator_params "
                   "(set them in --train_config, or repeat stage 1's --codec_conf generator_params.* in --stage2_args)")


if __name__ == "__main__":
    main()

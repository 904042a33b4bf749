"""Recipe stage 9: pack a trained codec into a zip that ``ALMTokenizer.from_pretrained`` loads.

    python -m espnet2_almtok.recipe.pack --exp_dir exp/codec_stage2 --out exp/codec_stage2/almtok_packed.zip

The zip holds ``config.yaml`` (prior paths cleared: the codebooks are in the weights),
``model.pth`` (the chosen weights), the semantic-prior ``.npy`` files and ``prior_info.yaml``
when given, and ``meta.yaml`` (rates and bitrates per window).
"""

import argparse
import math
import os
import zipfile
from pathlib import Path
from typing import Sequence

import yaml

from espnet2_almtok.api import _find_model_file


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--model_file", type=Path, default=None)
    p.add_argument("--prior_dir", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    model_file = args.model_file or _find_model_file(args.exp_dir)
    conf = yaml.safe_load((args.exp_dir / "config.yaml").read_text())
    gen = conf["codec_conf"]["generator_params"]
    priors = [Path(f) for f in (gen.get("codebook_init") or []) if f]
    gen["codebook_init"] = None
    hop = math.prod(gen["patch_strides"])
    fs = conf["codec_conf"]["sampling_rate"]
    meta = {"sample_rate": fs, "n_q": gen["n_q"], "codebook_size": gen["codebook_size"],
            "windows": {w: {"token_rate": fs / hop / w,
                            "bitrate": fs / hop / w * gen["n_q"] * math.log2(gen["codebook_size"])}
                        for w in gen["windows"]},
            "model_file": str(model_file)}
    tmp = args.out.with_name(args.out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("almtok/config.yaml", yaml.safe_dump(conf, sort_keys=False))
        zf.write(model_file, "almtok/model.pth")
        zf.writestr("almtok/meta.yaml", yaml.safe_dump(meta, sort_keys=False))
        for f in priors:
            if f.exists():
                zf.write(f, f"almtok/priors/{f.name}")
        if args.prior_dir and (args.prior_dir / "prior_info.yaml").exists():
            zf.write(args.prior_dir / "prior_info.yaml", "almtok/priors/prior_info.yaml")
    os.replace(tmp, args.out)
    print(args.out)


if __name__ == "__main__":
    main()

"""Recipe stage 9: pack a trained codec in ESPnet's pack format; stage 11: upload it to Hugging Face.

    python -m espnet2_almtok.recipe.pack --exp_dir exp/codec_stage2 --out exp/codec_stage2/almtok_packed.zip
    python -m espnet2_almtok.recipe.pack --upload_hf user/almtok-demo --packed exp/codec_stage2/almtok_packed.zip

The zip is what ``espnet2.main_funcs.pack_funcs.unpack`` reads (``python -m espnet2.bin.pack``'s
layout): a top-level ``meta.yaml`` with ``files: {model_file: almtok/model.pth}``,
``yaml_files: {train_config: almtok/config.yaml}``, ``timestamp``, ``python``, ``torch`` and
``espnet``, so ``unpack(zip, dir)`` returns the ``train_config``/``model_file`` arguments of
ESPnet's ``AudioCoding`` (use ``espnet2_almtok.bin.gan_codec_inference``, which has the almtok
codec registered). ``ALMTokenizer.from_pretrained(zip)`` reads the same zip. Members:

- ``almtok/config.yaml``: the training config; ``codebook_init`` names the prior files inside the
  zip (``almtok/priors/codebook_<i>.npy``, which ``unpack`` rewrites to the extracted paths), or
  ``null`` for a codebook whose prior file is missing. No absolute path of the exp dir is kept:
  the loaders do not read the priors anyway, since the codebooks are in the weights.
- ``almtok/model.pth``: the generator's inference weights only (``codec.generator.*`` keys, no
  discriminator, no MAE/AR heads; :func:`espnet2_almtok.api.inference_state_dict`). ESPnet's
  loader (``build_model_from_file``) loads state dicts with ``strict=False``, so it accepts them;
  ``gan_codec_inference`` checks that every generator weight it uses is in the file.
- ``almtok/priors/``: the semantic-prior ``.npy`` files and ``prior_info.yaml`` (when found).
- ``almtok/codec_info.yaml``: sample rate, ``n_q``, codebook size, token rate and bitrate per
  window. (It is not named ``meta.yaml``: ``unpack`` takes the first ``*/meta.yaml`` it meets as
  the pack's own.)

``meta.yaml`` also records ``sha256: {member: digest}`` for every other member (ESPnet's
``unpack`` ignores the key). ``ALMTokenizer.from_pretrained`` and ``gan_codec_inference
--model_tag`` check the members they read and refuse a corrupted or altered one, naming the zip
and the member (re-download or re-pack); a zip without the key (packed before it existed)
loads with a warning.

Upload (``--upload_hf REPO``, recipe stage 11, like ESPnet ``codec.sh``'s): the zip's members in
ESPnet's layout plus a model card (``README.md``) are pushed to the model repo ``REPO`` with
``huggingface_hub``. Offline (``HF_HUB_OFFLINE=1`` or the Hub unreachable) or not logged in
(no token: ``huggingface-cli login`` or ``HF_TOKEN``), it prints why and exits 1 without uploading.
"""

import argparse
import hashlib
import io
import math
import os
import socket
import sys
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

import torch
import yaml

from espnet2_almtok.api import CHECKSUM_KEY, _find_model_file, _read_config, inference_state_dict, verify_packed
from espnet2_almtok.fileio import file_sha256

ROOT = "almtok"
PACK_CONFIG = f"{ROOT}/config.yaml"
PACK_MODEL = f"{ROOT}/model.pth"
PACK_INFO = f"{ROOT}/codec_info.yaml"


def espnet_meta(checksums: Optional[dict] = None) -> dict:
    """The top-level ``meta.yaml`` of ESPnet's ``pack_funcs.pack``, plus ``sha256``: the digest of
    every other member (``unpack`` ignores the key; our loaders verify what they read)."""
    meta = dict(files={"model_file": PACK_MODEL}, yaml_files={"train_config": PACK_CONFIG},
                timestamp=datetime.now().timestamp(), python=sys.version, torch=str(torch.__version__))
    if checksums:
        meta[CHECKSUM_KEY] = dict(checksums)
    try:
        import espnet

        meta["espnet"] = espnet.__version__
    except ImportError:
        pass
    return meta


def codec_info(conf: dict, model_file: Path) -> dict:
    gen = conf["codec_conf"]["generator_params"]
    hop = math.prod(gen["patch_strides"])
    fs = conf["codec_conf"]["sampling_rate"]
    return {"sample_rate": fs, "n_q": gen["n_q"], "codebook_size": gen["codebook_size"],
            "inference_window": conf["codec_conf"].get("inference_window", 4),
            "windows": {w: {"token_rate": fs / hop / w,
                            "bitrate": fs / hop / w * gen["n_q"] * math.log2(gen["codebook_size"])}
                        for w in gen["windows"]},
            "model_file": model_file.name}


def _dump(data, sort_keys: bool = False) -> str:
    """YAML without anchors or aliases (the loaders refuse them: api.read_zip_yaml)."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    return yaml_no_alias_safe_dump(data, sort_keys=sort_keys)


def _check_prior(path: Path, gen: dict) -> None:
    """Refuse, naming it, a ``codebook_init`` file that is not a semantic-prior array: a ``.npy``
    of plain floats shaped ``(codebook_size, codebook_dim)`` (stage 3 writes those)."""
    import numpy as np

    shape = (gen.get("codebook_size"), gen.get("codebook_dim"))
    problem = None
    if path.suffix != ".npy":
        problem = "it is not a .npy file"
    else:
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
            if arr.dtype.kind != "f" or tuple(arr.shape) != shape:
                problem = f"it holds a {arr.dtype} array of shape {tuple(arr.shape)}, not {shape} floats"
        except (ValueError, OSError) as e:
            problem = f"it is not a readable NumPy array ({e})"
    if problem:
        raise ValueError(f"config.yaml's codebook_init names {path}, but {problem}: packing copies only the "
                         "semantic priors stage 3 wrote (exp/semantic_prior/codebook_<i>.npy); fix codebook_init in "
                         "config.yaml (and delete config.digest.yaml beside it, which records the config as trained)")


def pack(exp_dir: Path, out: Path, model_file: Optional[Path] = None, prior_dir: Optional[Path] = None) -> Path:
    """Write the zip (see the module doc) to ``out`` (atomically) and return ``out``."""
    model_file = Path(model_file) if model_file else _find_model_file(exp_dir)
    conf = _read_config(exp_dir / "config.yaml")  # checks it, and its training stamp (config_stamp)
    gen = conf["codec_conf"]["generator_params"]
    members = {}  # name in the zip -> file to copy
    init = []
    for i, f in enumerate(gen.get("codebook_init") or []):
        path = Path(f) if f else None
        if path is not None and not path.is_absolute() and not path.exists():
            path = exp_dir / path  # relative to the exp dir (a moved exp dir)
        if path is not None and path.is_file():
            _check_prior(path, gen)  # only semantic-prior arrays go into a zip that may be published
            name = f"{ROOT}/priors/{path.name}" if path.name not in [Path(m).name for m in members] \
                else f"{ROOT}/priors/{i + 1}_{path.name}"
            members[name] = path
            init.append(name)
        else:
            init.append(None)
    gen["codebook_init"] = init if any(init) else None
    if prior_dir and (Path(prior_dir) / "prior_info.yaml").is_file():
        members[f"{ROOT}/priors/prior_info.yaml"] = Path(prior_dir) / "prior_info.yaml"
    weights = io.BytesIO()
    torch.save(inference_state_dict(model_file), weights)
    contents = {PACK_CONFIG: _dump(conf).encode(), PACK_MODEL: weights.getvalue(),
                PACK_INFO: _dump(codec_info(conf, model_file)).encode()}
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    checksums.update({name: file_sha256(path) for name, path in members.items()})
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        # first: unpack reads the first meta.yaml
        zf.writestr("meta.yaml", _dump(espnet_meta(checksums), sort_keys=True))
        for name, data in contents.items():
            zf.writestr(name, data)
        for name, path in members.items():
            zf.write(path, name)
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------- Hugging Face upload
def hf_upload_blocker(endpoint: Optional[str] = None, timeout: float = 5.0) -> Optional[str]:
    """Why an upload cannot happen here (offline, not logged in, Hub unreachable), or None."""
    try:
        import huggingface_hub
    except ImportError:
        return "huggingface_hub is not installed (pip install huggingface_hub)"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set (offline mode)"
    if not huggingface_hub.get_token():
        return "not logged in to Hugging Face (run `huggingface-cli login` or set HF_TOKEN)"
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname} cannot be reached (offline?): {e}"
    return None


def model_card(repo: str, info: dict) -> str:
    rates = "\n".join(f"| {w} | {v['token_rate']:.2f} | {v['bitrate']:.1f} |" for w, v in info["windows"].items())
    return f"""---
tags: [espnet, audio, audio-to-audio, codec, almtok]
library_name: espnet
---
# {repo}: ALMTokenizer codec (ESPnet)

ALMTokenizer (Yang et al., ICML 2025, arXiv 2504.10344), trained with the `egs2/almtok/codec1`
recipe of the almtok ESPnet plugin. {info['sample_rate']} Hz, {info['n_q']} codebooks of
{info['codebook_size']} entries; the token rate is chosen at inference by the query window w
(default {info['inference_window']}).

| w | tokens/s | bitrate (bps) |
|---|---|---|
{rates}

Files in ESPnet's pack layout (`meta.yaml`, `{PACK_CONFIG}`, `{PACK_MODEL}`: generator weights only).

```python
from espnet2_almtok import ALMTokenizer
tok = ALMTokenizer.from_pretrained("almtok_packed.zip")   # the recipe's stage-9 zip of these files
codes = tok.encode("speech.wav", window=4)
```

```bash
python -m espnet2_almtok.bin.gan_codec_inference --train_config {PACK_CONFIG} --model_file {PACK_MODEL} \\
    --data_path_and_name_and_type wav.scp,audio,sound --output_dir out --window 4
```
"""


def upload_hf(repo: str, packed: Path) -> bool:
    """Push the packed zip's members and a model card to the HF model repo ``repo``; False (after
    saying why) where this machine cannot upload."""
    why = hf_upload_blocker()
    if why:
        print(f"Hugging Face upload skipped: {why}. Nothing was uploaded; {packed} is ready to upload "
              f"later (./run.sh --stage 11 --stop_stage 11 --skip_upload_hf false --hf_repo {repo}).")
        return False
    from huggingface_hub import HfApi

    verify_packed(packed)  # never publish a corrupted zip
    with zipfile.ZipFile(packed) as zf, tempfile.TemporaryDirectory(prefix="almtok_hf_") as tmp:
        zf.extractall(tmp)
        info = yaml.safe_load(Path(tmp, PACK_INFO).read_text())
        Path(tmp, "README.md").write_text(model_card(repo, info))
        api = HfApi()
        api.create_repo(repo, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=tmp, repo_type="model",
                          commit_message=f"Upload ALMTokenizer codec ({packed.name})")
    print(f"Uploaded {packed} to https://huggingface.co/{repo}")
    return True


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", type=Path, default=None, help="packing: the exp dir (config.yaml + weights)")
    p.add_argument("--model_file", type=Path, default=None, help="packing: the weights (default: the best found)")
    p.add_argument("--prior_dir", type=Path, default=None, help="packing: the stage-3 dir (prior_info.yaml)")
    p.add_argument("--out", type=Path, default=None, help="packing: the zip to write")
    p.add_argument("--upload_hf", default=None, metavar="REPO", help="upload --packed to this HF model repo")
    p.add_argument("--packed", type=Path, default=None, help="upload: the packed zip")
    args = p.parse_args(argv)
    if args.upload_hf:
        if not args.packed or not args.packed.is_file():
            p.error(f"--upload_hf needs --packed, the zip of stage 9 (got {args.packed})")
        if not upload_hf(args.upload_hf, args.packed):
            sys.exit(f"the upload to {args.upload_hf} that was asked for did not happen (above)")
        return
    if args.exp_dir is None or args.out is None:
        p.error("packing needs --exp_dir and --out")
    print(pack(args.exp_dir, args.out, args.model_file, args.prior_dir))


if __name__ == "__main__":
    main()

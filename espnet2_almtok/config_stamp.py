"""The training config's stamp: ``config.digest.yaml`` beside an exp dir's ``config.yaml``.

ESPnet writes every option of a training to ``<exp>/config.yaml``, and loading a model rebuilds it
from that file alone. An option changed there afterwards (the coding context, the windows, the
sampling rate) or a key lost (a file cut short) gives a model that loads and codes differently
from the one trained, often with no shape error to stop it. So when a training starts, our
trainers write (rank 0) the sha256 of ``config.yaml`` and of each of its top-level keys::

    file: <sha256 of config.yaml>
    keys: {<key>: <sha256 of the key's value>, ...}

(the LM task: when its training ends, as ESPnet's DeepSpeed needs its plain trainer), and every
loader of an exp dir (:func:`check_config_stamp`: ``ALMTokenizer.from_pretrained``,
ESPnet's ``build_model_from_file`` through our tasks, ``gan_codec_inference``, packing) refuses a
``config.yaml`` that disagrees with its stamp, naming the keys changed, lost or added. An edit
that changes no value (a comment, re-indenting) passes. A ``config.yaml`` without a stamp (an exp
dir trained before stamps, a hand-written config) loads as before; a packed zip carries no stamp:
the sha256 of each member recorded in its ``meta.yaml`` covers it.

To use an edited config on purpose, delete ``config.digest.yaml`` (the message says so).
"""

import json
from pathlib import Path
from typing import Optional, Union

import yaml

from espnet2_almtok.fileio import atomic_write_text, text_sha256

STAMP_NAME = "config.digest.yaml"


def stamp_path(config: Union[str, Path]) -> Path:
    return Path(config).with_name(STAMP_NAME)


def _canonical(value):
    """A parsed YAML value with every mapping key a string (JSON sorts only those; YAML allows
    ``{1: a, b: c}``), the key's type kept in its text."""
    if isinstance(value, dict):
        return {f"{type(k).__name__}:{k}": _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _value_digest(value) -> str:
    """sha256 of a parsed YAML value (a canonical JSON text: key order and formatting do not count)."""
    return text_sha256(json.dumps(_canonical(value), sort_keys=True, default=repr))


def _parse(text: str) -> dict:
    conf = yaml.safe_load(text) or {}
    return conf if isinstance(conf, dict) else {}


def config_stamp(text: str) -> dict:
    """The stamp of a config's text: ``{"file": sha256, "keys": {key: sha256}}``."""
    return {"file": text_sha256(text),
            "keys": {str(k): _value_digest(v) for k, v in _parse(text).items()}}


def write_config_stamp(config: Union[str, Path]) -> Path:
    """Write the stamp of ``config`` (a training's ``config.yaml``) beside it, atomically."""
    config = Path(config)
    out = stamp_path(config)
    header = ("# written by almtok's training: the sha256 of config.yaml and of each of its keys.\n"
              "# Loading refuses a config.yaml that disagrees; delete this file to load an edited one.\n")
    atomic_write_text(out, header + yaml.safe_dump(config_stamp(config.read_text()), sort_keys=False))
    return out


def config_stamp_problem(config: Union[str, Path]) -> Optional[str]:
    """What differs between ``config`` and its stamp (None: they agree, or there is no stamp)."""
    config = Path(config)
    stamp_file = stamp_path(config)
    if not stamp_file.is_file():
        return None
    try:
        stamp = yaml.safe_load(stamp_file.read_text())
        recorded_file, recorded = stamp["file"], dict(stamp["keys"])
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError, ValueError):
        return f"its stamp {stamp_file} is unreadable (not the file almtok writes)"
    text = config.read_text()
    if text_sha256(text) == recorded_file:
        return None
    try:
        now = config_stamp(text)["keys"]
    except yaml.YAMLError:
        return "it is no longer the YAML file the training wrote"
    changed = sorted(k for k in recorded.keys() & now.keys() if recorded[k] != now[k])
    lost = sorted(recorded.keys() - now.keys())
    added = sorted(now.keys() - recorded.keys())
    parts = [f"{label} {', '.join(repr(k) for k in keys)}" for label, keys in
             (("changed:", changed), ("lost:", lost), ("added:", added)) if keys]
    return "; ".join(parts) or None  # only comments or layout changed: the same options


def check_config_stamp(config: Union[str, Path]) -> None:
    """Refuse ``config`` (a ``config.yaml`` about to build a model) if it disagrees with the
    stamp its training wrote, naming the keys and the fixes."""
    problem = config_stamp_problem(config)
    if problem:
        raise ValueError(
            f"config {config} is not the config its training wrote ({problem}): the model would be built "
            f"with other settings than it was trained with. Restore the file, or, to load the edited config "
            f"on purpose, delete {stamp_path(config)} (inference settings such as the window and the context "
            "are options of the inference tools, not edits of config.yaml)")


class StampsConfig:
    """Mixin for ESPnet trainers (put it first in the bases): ``run`` (called by ESPnet's
    ``main_worker`` once it has written ``<output_dir>/config.yaml``) stamps the config on rank 0
    before training starts."""

    @classmethod
    def run(cls, *, trainer_options, distributed_option, **kwargs) -> None:
        config = Path(trainer_options.output_dir) / "config.yaml"
        if (not distributed_option.distributed or distributed_option.dist_rank == 0) and config.is_file():
            write_config_stamp(config)
        return super().run(trainer_options=trainer_options, distributed_option=distributed_option, **kwargs)

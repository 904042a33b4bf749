"""ESPnet task classes of almtok.

Model files are never unpickled with ``weights_only=False``: ESPnet 202511's
``build_model_from_file`` (inference) and ``load_pretrained_model`` (``--init_param``) call
``torch.load(..., weights_only=False)``, so a crafted file would run code. Our tasks
(:class:`WeightsOnlyModelFiles`) and ``--init_param`` (:func:`_check_init_param_weights_only`)
read the file with ``weights_only=True`` first and refuse it, naming it, unless it holds tensors
and plain containers only. (The trainer's own resume file, ``checkpoint.pth`` in the output
dir, is ESPnet's and is excepted.)

Importing ESPnet here goes to no network: ``espnet2_almtok.startup`` (run by the package's
``__init__``) imports ``g2p_en`` with NLTK's downloads disabled.
"""


class WeightsOnlyModelFiles:
    """Mixin for our ESPnet task classes (put it first in the bases): ``build_model_from_file``
    refuses a model file that does not load with ``weights_only=True``, before ESPnet unpickles it,
    and a ``config.yaml`` edited after its training stamped it (:mod:`espnet2_almtok.config_stamp`)."""

    @classmethod
    def build_model_from_file(cls, config_file=None, model_file=None, device: str = "cpu"):
        from pathlib import Path

        from espnet2_almtok.config_stamp import check_config_stamp

        if config_file is not None or model_file is not None:  # ESPnet's default: config.yaml beside the model
            check_config_stamp(config_file if config_file is not None else Path(model_file).parent / "config.yaml")
        if model_file is not None:
            from espnet2_almtok.api import load_weights_only

            load_weights_only(model_file, mmap=True)  # raises naming the file; nothing is executed
        return super().build_model_from_file(config_file, model_file, device)


class StampsConfigAfterTraining:
    """Mixin for task classes whose trainer must stay ESPnet's own ``Trainer`` (ESPnet refuses
    ``--use_deepspeed`` with any other): rank 0 stamps ``<output_dir>/config.yaml``
    (:mod:`espnet2_almtok.config_stamp`) once ``main_worker`` has trained. Put it after
    :class:`DistributedTeardown` in the bases, so the process group is still up."""

    @classmethod
    def main_worker(cls, args):
        super().main_worker(args)
        import torch.distributed as dist
        from pathlib import Path

        from espnet2_almtok.config_stamp import write_config_stamp

        config = Path(args.output_dir) / "config.yaml"
        trained = not (getattr(args, "collect_stats", False) or getattr(args, "dry_run", False))
        rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
        if trained and rank0 and config.is_file():
            write_config_stamp(config)


class DistributedTeardown:
    """Mixin for our ESPnet task classes: after a successful ``main_worker`` (one rank's training)
    in a DDP run, the ranks meet at a barrier and the process group is destroyed before the
    process exits.

    ESPnet's trainer never destroys it, and rank 0 still averages and saves models after the last
    epoch while the other ranks leave at once: a rank whose interpreter then exits with the gloo
    process group alive can die in its destructor ("terminate called without an active
    exception", SIGABRT), and srun then kills the whole step although the training finished.
    On an exception no barrier is entered (the other ranks may never reach it): the error
    propagates as before."""

    @classmethod
    def main_worker(cls, args):
        super().main_worker(args)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _check_init_param_weights_only() -> None:
    """Wrap ESPnet's ``load_pretrained_model`` as the trainer calls it (``--init_param
    path[:src:dst:exclude]``) with the same ``weights_only=True`` check of ``path``."""
    import espnet2.tasks.abs_task as abs_task

    original = abs_task.load_pretrained_model
    if getattr(original, "weights_only_checked", False):
        return

    def load_pretrained_model(init_param: str, *args, **kwargs):
        from espnet2_almtok.api import load_weights_only

        load_weights_only(str(init_param).split(":", 1)[0], mmap=True)
        return original(init_param, *args, **kwargs)

    load_pretrained_model.weights_only_checked = True
    abs_task.load_pretrained_model = load_pretrained_model


_check_init_param_weights_only()


def checkpoint_problem(checkpoint) -> "str | None":
    """What is wrong with a trainer checkpoint (``torch.save``'s zip archive), or None: not a zip
    (truncated: its central directory, at the end, is missing), or a member whose CRC-32 does not
    match its data (a torn write or bit rot; ``torch.load`` itself does not check them)."""
    import zipfile

    try:
        with zipfile.ZipFile(checkpoint) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as e:
        return f"not a complete PyTorch zip archive: {e}"
    except (OSError, EOFError, ValueError, zipfile.LargeZipFile) as e:  # a member cut short
        return f"{type(e).__name__}: {e}"
    if bad is not None:
        return f"member {bad} fails its CRC-32 check"
    return None


def _check_resume_checkpoint() -> None:
    """Wrap ESPnet's ``Trainer.resume`` (``--resume true`` with ``<output_dir>/checkpoint.pth``
    present; the GAN trainer inherits it) so that a truncated or corrupted checkpoint is refused
    with an error naming the file and the fix, before ESPnet's ``torch.load`` reads it. (A kill
    while ESPnet writes ``checkpoint.pth`` leaves it truncated: ESPnet does not write it atomically.)"""
    from espnet2.train.trainer import Trainer

    original = Trainer.__dict__["resume"].__func__
    if getattr(original, "checkpoint_checked", False):
        return

    def resume(checkpoint, *args, **kwargs):
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            raise ValueError(resume_error(checkpoint, problem))
        return original(checkpoint, *args, **kwargs)

    resume.checkpoint_checked = True
    resume.__doc__ = original.__doc__
    Trainer.resume = staticmethod(resume)


def resume_error(checkpoint, problem: str) -> str:
    """The message for an unusable ``checkpoint.pth``: the file, what is wrong, and the fixes."""
    import re
    from pathlib import Path

    checkpoint = Path(checkpoint)
    epochs = sorted((int(m.group(1)), p.name) for p in checkpoint.parent.glob("*epoch.pth")
                    if (m := re.fullmatch(r"(\d+)epoch\.pth", p.name)))
    if epochs:
        last = checkpoint.parent / epochs[-1][1]
        weights = (f"; to start from the weights of the last saved epoch instead, delete it and add "
                   f"'--init_param {last}' (the epoch count and optimizer state start afresh)")
    else:
        weights = f" (no <N>epoch.pth is saved in {checkpoint.parent} to start from)"
    return (f"{checkpoint} (the trainer's resume file, read because of --resume true) is truncated or "
            f"corrupted ({problem}); training cannot resume from it. Restore it from a backup, or "
            f"delete it ('rm {checkpoint}') and rerun: training then starts from epoch 1{weights}.")


_check_resume_checkpoint()


def _safe_nested_dict_action() -> None:
    """ESPnet 202511's ``NestedDictAction`` (``--codec_conf``, ``--model_conf``, ``--optim_conf``,
    ...) ``eval()``s a value without ``=`` and loads ``key=value`` values with YAML's unsafe
    loader: a command-line word could run code. Ours parses both with ``yaml.safe_load`` only
    (``key=value``, ``key.sub=value``, or a YAML/flow mapping such as ``{a: 1, b: true}``), and
    refuses anything else naming the option and the syntax."""
    import argparse
    import copy

    import yaml
    from espnet2.utils.nested_dict_action import NestedDictAction

    if getattr(NestedDictAction.__call__, "safe_yaml_only", False):
        return

    def __call__(self, parser, namespace, values, option_strings=None):
        def load(text):
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise argparse.ArgumentError(self, f"{values!r} is not plain YAML ({type(e).__name__}); "
                                                   f"give key=value or a mapping such as '{{a: 1}}'") from None

        if "=" in values and not values.lstrip().startswith("{"):
            key, value = values.split("=", maxsplit=1)
            value = load(value) if value.strip() else value
            indict = copy.deepcopy(getattr(namespace, self.dest, {}))
            if not isinstance(indict, dict):
                indict = {}
            d = indict
            keys = key.split(".")
            for k in keys[:-1]:
                if not isinstance(d.setdefault(k, {}), dict):
                    d[k] = {}
                d = d[k]
            d[keys[-1]] = value
            setattr(namespace, self.dest, indict)
            return
        value = load(values)
        if not isinstance(value, dict):
            raise argparse.ArgumentError(self, f"{values!r} must be key=value or a mapping such as '{{a: 1}}' "
                                               "(it is read as YAML, never evaluated)")
        d = getattr(namespace, self.dest, None)
        if isinstance(d, dict):
            d.update(value)
        else:
            setattr(namespace, self.dest, value)

    __call__.safe_yaml_only = True
    NestedDictAction.__call__ = __call__


_safe_nested_dict_action()

"""ESPnet's GAN trainer with mixed precision that is right for two optimizers.

ESPnet 202511's :class:`~espnet2.train.gan_trainer.GANTrainer` under ``use_amp: true``
autocasts to float16 with a GradScaler, unscales only the stepping optimizer's gradients and
then clips ``model.parameters()``: in the generator turn that set still holds the
discriminator's *scaled* gradients (the generator's adversarial loss reaches the discriminator
too), so the norm it clips by is the scale's (65536 x) and the generator's gradient is cut to
almost nothing. It also autocasts only on CUDA and never to bfloat16.

:class:`ALMTokGANTrainer` (the codec task's ``trainer``) runs each turn with :func:`gan_turn`:

- ``use_amp: true`` autocasts to ``--amp_dtype`` (``auto``: bfloat16 where the device has it --
  Ampere and later GPUs, and CPUs -- else float16). bfloat16 needs no loss scaling and gets
  none; float16 keeps ESPnet's GradScaler and unscales before clipping;
- gradient clipping (``grad_clip``) acts on the parameters of the optimizer that steps in
  this turn only, so each turn's norm is its own network's;
- the quantizer runs in float32 under autocast (:class:`~espnet2_almtok.codec.quantizer.ResidualVQ`).

Everything else is ESPnet's: the turn order (``generator_first``), ``skip_discriminator_prob``
(synchronised over ranks), the reporter's statistics and timings, DDP's stop flag for ranks
with fewer batches, and a step skipped (with a warning) when the gradient norm is not finite.
"""

import argparse
import dataclasses
import logging
import time
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from typeguard import typechecked

from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler, AbsScheduler
from espnet2.torch_utils.device_funcs import to_device
from espnet2.torch_utils.recursive_op import recursive_average
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.gan_trainer import GANTrainer, GANTrainerOptions
from espnet2.train.reporter import SubReporter
from espnet2.utils.build_dataclass import build_dataclass

from espnet2_almtok.config_stamp import StampsConfig

AMP_DTYPES = ("auto", "bfloat16", "float16")


@dataclasses.dataclass
class ALMTokGANTrainerOptions(GANTrainerOptions):
    amp_dtype: str


def autocast_dtype(use_amp: bool, requested: str, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype of a run (None: no autocast). ``requested``: one of :data:`AMP_DTYPES`."""
    if requested not in AMP_DTYPES:
        raise ValueError(f"--amp_dtype {requested!r}: choose one of {AMP_DTYPES}")
    if not use_amp:
        return None
    if requested == "auto":
        if device_type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if requested == "bfloat16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp_dtype bfloat16: this GPU has no bfloat16 (it needs Ampere or later); "
                         "use --amp_dtype float16 (loss-scaled) or --use_amp false")
    return getattr(torch, requested)


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> List[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _optim_idx(retval: Dict) -> Optional[int]:
    """ESPnet's ``optim_idx`` (an int, or a tensor of one repeated value) as an int or None."""
    idx = retval.get("optim_idx")
    if idx is None or isinstance(idx, int):
        return idx
    if not isinstance(idx, torch.Tensor) or idx.dim() >= 2:
        raise RuntimeError(f"optim_idx must be an int or a 0/1-dim tensor, got {idx!r}")
    if idx.dim() == 1 and bool((idx != idx[0]).any()):
        raise RuntimeError("optim_idx must hold the same value in every entry")
    return int(idx.reshape(-1)[0].item())


def gan_turn(model: torch.nn.Module, batch: Dict[str, torch.Tensor], turn: str,
             optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Optional[AbsScheduler]],
             dtype: Optional[torch.dtype], scaler=None, grad_clip: float = 0.0, grad_clip_type: float = 2.0,
             distributed: bool = False, ngpu: int = 0,
             measure: Callable[[str], object] = lambda name: nullcontext()) -> Dict:
    """One turn (``"generator"`` or ``"discriminator"``) of a GAN training step: forward under
    autocast (``dtype``; None: none), backward, clipping and the step of the optimizer the model's
    ``optim_idx`` names (with ``scaler``, a float16 GradScaler, the loss is scaled and that
    optimizer's gradients unscaled before clipping).

    Returns ``stats``, ``weight`` (ESPnet's, for the reporter), ``optim_idx``, ``grad_norm``
    (the stepping optimizer's parameters' norm before clipping; None without ``grad_clip``)
    and ``stepped`` (False when the norm was not finite and the step was skipped)."""
    device_type = "cuda" if ngpu > 0 else "cpu"
    if dtype is not torch.float16:
        scaler = None  # bfloat16 and float32 need no loss scaling
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        with measure(f"{turn}_forward_time"):
            retval = model(forward_generator=turn == "generator", **batch)
            if not isinstance(retval, dict):
                raise RuntimeError("model output must be dict.")
            loss, stats, weight = retval["loss"], retval["stats"], retval["weight"]
            optim_idx = _optim_idx(retval)
        stats = {k: v for k, v in stats.items() if v is not None}
        if ngpu > 1 or distributed:
            loss = (loss * weight.type(loss.dtype)).sum()
            stats, weight = recursive_average(stats, weight, distributed)
            loss /= weight
        if distributed:  # DDP averages gradients over ranks; ESPnet's loss is a weighted sum
            loss *= torch.distributed.get_world_size()

    stepping = [(o, s) for i, (o, s) in enumerate(zip(optimizers, schedulers)) if optim_idx is None or i == optim_idx]
    with measure(f"{turn}_backward_time"):
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        for optimizer, _ in stepping:
            scaler.unscale_(optimizer)

    grad_norm = None
    if grad_clip > 0.0:
        params = [p for optimizer, _ in stepping for p in optimizer_parameters(optimizer)]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip, norm_type=grad_clip_type)
    stepped = grad_norm is None or bool(torch.isfinite(grad_norm))
    if not stepped:
        logging.warning(f"The {turn}'s grad norm is {grad_norm}. Skipping updating the model.")
    with measure(f"{turn}_optim_step_time"):
        for optimizer, scheduler in stepping:
            if scaler is not None:
                scaler.step(optimizer)  # skips the step itself when the gradients are not finite
                scaler.update()
            elif stepped:
                optimizer.step()
            if stepped and isinstance(scheduler, AbsBatchStepScheduler):
                scheduler.step()
    for optimizer in optimizers:  # both networks' gradients are cleared after every turn (GAN)
        optimizer.zero_grad()
    return dict(stats=stats, weight=weight, optim_idx=optim_idx, grad_norm=grad_norm, stepped=stepped)


class ALMTokGANTrainer(StampsConfig, GANTrainer):
    """ESPnet's GANTrainer with :func:`gan_turn`'s mixed precision and per-turn clipping."""

    notes: List[str] = []  # said once in the training log (by the first epoch)

    @classmethod
    @typechecked
    def build_options(cls, args: argparse.Namespace) -> ALMTokGANTrainerOptions:
        return build_dataclass(ALMTokGANTrainerOptions, args)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser):
        super().add_arguments(parser)
        parser.add_argument(
            "--amp_dtype", default="auto", choices=AMP_DTYPES,
            help="with --use_amp true: autocast to this dtype. auto: bfloat16 where the device has it "
                 "(Ampere+ GPUs, CPUs; no loss scaling), else float16 (with ESPnet's GradScaler)")

    @classmethod
    def _dtype(cls, options) -> Optional[torch.dtype]:
        dtype = autocast_dtype(options.use_amp, options.amp_dtype, "cuda" if options.ngpu > 0 else "cpu")
        if not getattr(cls, "_dtype_logged", False):
            cls._dtype_logged = True
            logging.info(f"almtok GAN trainer: autocast {dtype or 'off (float32)'}"
                         + (", loss-scaled" if dtype is torch.float16 else ""))
            for note in cls.notes:
                logging.info(note)
        return dtype

    @classmethod
    @typechecked
    def train_one_epoch(
        cls,
        model: torch.nn.Module,
        iterator: Iterable[Tuple[List[str], Dict[str, torch.Tensor]]],
        optimizers: Sequence[torch.optim.Optimizer],
        schedulers: Sequence[Optional[AbsScheduler]],
        scaler,
        reporter: SubReporter,
        summary_writer,
        options: ALMTokGANTrainerOptions,
        distributed_option: DistributedOption,
    ) -> bool:
        """ESPnet's ``GANTrainer.train_one_epoch``, each turn run by :func:`gan_turn`."""
        if options.accum_grad > 1:
            raise NotImplementedError("accum_grad > 1 is not supported in GAN-based training.")
        if options.grad_noise:
            raise NotImplementedError("grad_noise is not supported in GAN-based training.")
        dtype = cls._dtype(options)
        distributed = distributed_option.distributed
        device = "cuda" if options.ngpu > 0 else "cpu"
        log_interval = options.log_interval
        if log_interval is None:
            try:
                log_interval = max(len(iterator) // 20, 10)
            except TypeError:
                log_interval = 100
        turns = ["generator", "discriminator"] if options.generator_first else ["discriminator", "generator"]

        model.train()
        all_steps_are_invalid = True
        iterator_stop = torch.tensor(0).to(device)
        start_time = time.perf_counter()
        for iiter, (_, batch) in enumerate(reporter.measure_iter_time(iterator, "iter_time"), 1):
            assert isinstance(batch, dict), type(batch)
            if distributed:
                torch.distributed.all_reduce(iterator_stop, torch.distributed.ReduceOp.SUM)
                if iterator_stop > 0:
                    break
            batch = to_device(batch, device)
            if options.no_forward_run:
                all_steps_are_invalid = False
                continue
            turn_start_time = time.perf_counter()
            for turn in turns:
                if turn == "discriminator" and cls._skip_discriminator(options.skip_discriminator_prob, device):
                    codec = model.module.codec if isinstance(model, DDP) else model.codec
                    codec._cache = None
                    continue
                out = gan_turn(model, batch, turn, optimizers, schedulers, dtype, scaler, options.grad_clip,
                               options.grad_clip_type, distributed, options.ngpu, reporter.measure_time)
                reporter.register(out["stats"], out["weight"])
                if out["stepped"]:
                    all_steps_are_invalid = False
                optim_idx = out["optim_idx"] or 0
                reporter.register({f"optim{optim_idx}_lr{i}": pg["lr"]
                                   for i, pg in enumerate(optimizers[optim_idx].param_groups) if "lr" in pg})
                if out["grad_norm"] is not None:
                    reporter.register({f"{turn}_grad_norm": float(out["grad_norm"])})
                reporter.register({f"{turn}_train_time": time.perf_counter() - turn_start_time})
                turn_start_time = time.perf_counter()
            reporter.register({"train_time": time.perf_counter() - start_time})
            start_time = time.perf_counter()
            reporter.next()
            if iiter % log_interval == 0:
                logging.info(reporter.log_message(-log_interval))
                if summary_writer is not None:
                    reporter.tensorboard_add_scalar(summary_writer, -log_interval)
                if options.use_wandb:
                    reporter.wandb_log()
        else:
            if distributed:
                iterator_stop.fill_(1)
                torch.distributed.all_reduce(iterator_stop, torch.distributed.ReduceOp.SUM)
        return all_steps_are_invalid

    @staticmethod
    def _skip_discriminator(prob: float, device: str) -> bool:
        """ESPnet's ``skip_discriminator_prob``: one draw, rank 0's, for every rank."""
        if prob <= 0.0:
            return False
        draw = torch.rand(1, device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(draw, src=0)
        return draw.item() < prob

    @classmethod
    @torch.no_grad()
    @typechecked
    def validate_one_epoch(
        cls,
        model: torch.nn.Module,
        iterator: Iterable[Dict[str, torch.Tensor]],
        reporter: SubReporter,
        options: ALMTokGANTrainerOptions,
        distributed_option: DistributedOption,
    ) -> None:
        """ESPnet's validation, under the training's autocast (the codec reuses its generator
        pass between the two turns of a batch, so the generator runs once per batch)."""
        dtype = cls._dtype(options)
        device_type = "cuda" if options.ngpu > 0 else "cpu"
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            super().validate_one_epoch(model, iterator, reporter, options, distributed_option)

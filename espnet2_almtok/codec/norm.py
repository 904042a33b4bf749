"""Per-dimension standardisation with running statistics that trains and infers alike.

:class:`RunningStandardize` is BatchNorm without its train/inference gap: it normalises with
running estimates in training too (so a training-mode forward gives what inference gives, and
an item's output depends on that item only), takes BatchNorm's gradient, and shares its
statistics over DDP ranks. The quantizer's :class:`~espnet2_almtok.codec.quantizer.CodebookSpaceNorm`
and the patchified frames' ``frame_norm: time`` are built on it.
"""

from typing import Optional

import torch
from torch import nn


def _real_items(z: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``(B, N, D)`` -> its real items ``(n, D)`` (``mask`` ``(B, N)`` True at them; all without one)."""
    return z[mask] if mask is not None else z.reshape(-1, z.shape[-1])


class RunningStandardize(nn.Module):
    """Standardise ``(B, N, D)`` per dimension ``D`` over its real items (``mask``), then give
    it ``target_mean`` / ``target_std`` per dimension (default 0 / 1).

    Training and inference normalise alike, with the running estimates, so an item's output
    depends on that item only and a training-mode forward gives what an eval-mode forward
    gives. In training the gradient is BatchNorm's (that of normalising with the batch's own
    statistics, through a straight-through sum: it ignores a common drift of the input), and
    the estimates are then updated from the batch's real items: a running average over the
    first ``1 / momentum`` updates, an exponential one (``momentum``) after; under DDP the batch
    statistics are summed over the ranks first, so every rank keeps the same estimates.
    ``update=False`` keeps them fixed (the quantizer passes it while its projection is frozen,
    in stage 2, so the codes of a clip stay fixed).
    """

    def __init__(self, dim: int, target_mean: Optional[torch.Tensor] = None,
                 target_std: Optional[torch.Tensor] = None, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("target_mean", torch.zeros(dim) if target_mean is None else target_mean.detach().clone())
        self.register_buffer("target_std", torch.ones(dim) if target_std is None
                             else target_std.detach().clone().clamp(min=eps))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # models saved before ``num_updates`` existed: their estimates are warm already
        key = prefix + "num_updates"
        if key not in state_dict and prefix + "running_mean" in state_dict:
            state_dict[key] = torch.tensor(int(round(1 / self.momentum)), dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        """Move the running estimates towards the statistics of ``z``'s real items (all ranks')."""
        real = _real_items(z, mask).detach().double()
        stats = torch.cat([real.new_tensor([real.shape[0]]), real.sum(0), real.pow(2).sum(0)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        n, dim = stats[0], z.shape[-1]
        if n < 2:
            return
        mean = stats[1: 1 + dim] / n
        var = (stats[1 + dim:] / n - mean.pow(2)).clamp(min=0) * n / (n - 1)
        rate = max(self.momentum, 1.0 / (int(self.num_updates) + 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), rate)
        self.running_var.lerp_(var.to(self.running_var.dtype), rate)
        self.num_updates += 1

    def forward(self, z: torch.Tensor, mask: Optional[torch.Tensor] = None, update: bool = True) -> torch.Tensor:
        """``z`` ``(B, N, D)``; ``mask`` ``(B, N)`` True at real items (the statistics' items)."""
        z = z.float()
        train = self.training and update
        first = train and int(self.num_updates) == 0
        if first:
            self.update(z, mask)  # the very first batch: no estimates yet to normalise with
        out = self._normalise(z, self.running_mean, self.running_var)
        if train:
            real = _real_items(z, mask)
            if real.shape[0] > 1:  # the value is the running estimates', the gradient BatchNorm's
                batch = self._normalise(z, real.mean(0), real.var(0, unbiased=False))
                out = batch + (out - batch).detach()
            if not first:
                self.update(z, mask)
        return out

    def _normalise(self, z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return (z - mean) * torch.rsqrt(var + self.eps) * self.target_std + self.target_mean

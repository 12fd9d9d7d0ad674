"""Statistics over the global batch of a DDP job, so N processes optimise the single-process objective.

Why: ``optim.batch_size`` is the global batch (docs/training.md). DDP averages gradients, which is
exact for losses that are means over images, but two things in CCDN are not per-image: Eq. 5's
batch-mode Q (the dot products of *batch means* of the pooled features) and BatchNorm's statistics.
Computed per process they change the objective (Q on half a batch is a different number). Here:
- :func:`global_batch_mean`: the mean over the global batch, all-gathered **with gradients**
  (``torch.distributed.nn.functional.all_gather``; its backward sums every process's gradient, and
  DDP's average then gives exactly the single-process gradient);
- :func:`sync_batchnorm`: BatchNorm over the global batch — ``torch.nn.SyncBatchNorm`` on CUDA, and on
  other devices (gloo/CPU, where SyncBatchNorm refuses to run) :class:`GlobalBatchNorm`, the same
  statistics computed with two autograd all-gathers.
Both are the identity in a single process, and outside autograd (``torch.no_grad``: validation, where
processes may run different numbers of batches and must not wait for each other).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def global_batch_active() -> bool:
    """True in a multi-process job while autograd records (training steps)."""
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and torch.is_grad_enabled())


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Every process's ``tensor`` stacked ``(world_size, *shape)``; gradients flow back to each process."""
    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        return torch.stack(dist_nn.all_gather(tensor.contiguous()))


def _global_sum_and_count(sums: Tensor, count: float) -> tuple[Tensor, Tensor]:
    """Sum of ``sums`` and of ``count`` over processes, in one differentiable all-gather."""
    packed = torch.cat([sums.flatten(), sums.new_tensor([count])])
    total = all_gather_with_grad(packed).sum(dim=0)
    return total[:-1].view_as(sums), total[-1]


def global_batch_mean(x: Tensor, dim: int = 0) -> Tensor:
    """Mean of ``x`` over ``dim`` across the whole global batch (local mean in a single process)."""
    if not global_batch_active():
        return x.mean(dim=dim)
    total, count = _global_sum_and_count(x.sum(dim=dim), float(x.shape[dim]))
    return total / count


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any dimensionality) whose training statistics cover all processes, on any backend."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and global_batch_active()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        compute = x.float()
        count = float(x.numel() // x.shape[1])
        total, n = _global_sum_and_count(compute.sum(dim=dims), count)
        mean = total / n
        squares, _ = _global_sum_and_count((compute - mean.view(shape)).square().sum(dim=dims), count)
        var = squares / n  # biased, as BatchNorm normalises with
        y = (compute - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), (var * n / (n - 1).clamp_min(1)).detach())
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var.to(self.running_var.dtype), alpha=factor)


def _to_global(module: _BatchNorm) -> GlobalBatchNorm:
    replacement = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
    replacement.load_state_dict(module.state_dict())
    return replacement.to(next(module.buffers(), torch.empty(0)).device)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` with global-batch statistics (SyncBatchNorm on CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, _BatchNorm) and not isinstance(model, (GlobalBatchNorm, nn.SyncBatchNorm)):
        return _to_global(model)
    for name, child in model.named_children():
        converted = sync_batchnorm(child, device)
        if converted is not child:
            setattr(model, name, converted)
    return model

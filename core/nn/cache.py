"""Filter banks derived from parameters: built per forward in training, cached in eval."""
from __future__ import annotations

import itertools

import torch
from torch import nn


class CachedKernel(nn.Module):
    """Base for layers whose convolution kernel is derived from their parameters.

    ``kernel()`` builds the kernel with :meth:`build_kernel` on every call in training mode or
    when autograd is recording. In eval mode under ``no_grad``/``inference_mode`` it is built once
    and reused. The cache is dropped on ``train()``/``eval()`` and on ``load_state_dict``, and is
    also keyed on the version counters and storage of the layer's own tensors, so an in-place edit
    of a weight or a move to another device or dtype can never serve a stale kernel.
    """

    def __init__(self):
        super().__init__()
        self._kernel_cache: tuple | None = None

    def build_kernel(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cache_key(self) -> tuple:
        own = itertools.chain(self.parameters(recurse=False), self.buffers(recurse=False))
        return tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in own)

    def kernel(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return self.build_kernel()
        key = self._cache_key()
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            self._kernel_cache = (key, self.build_kernel())
        return self._kernel_cache[1]

    def clear_kernel_cache(self) -> None:
        self._kernel_cache = None

    def train(self, mode: bool = True):
        self.clear_kernel_cache()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_kernel_cache()
        return super()._load_from_state_dict(*args, **kwargs)


def pairwise_abs_difference(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean |w_a - w_b| over all pairs a, b along ``dim``: 0 exactly when w is constant there."""
    w = w.movedim(dim, -1)
    return (w.unsqueeze(-1) - w.unsqueeze(-2)).abs().mean()


def neighbour_abs_difference(w: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """Mean |difference| between neighbours along the two grid ``dims`` (default the last two):
    0 exactly when w is constant over that grid (the grid is connected)."""
    terms = [(w.narrow(d, 1, w.shape[d] - 1) - w.narrow(d, 0, w.shape[d] - 1)).abs().mean()
             for d in dims if w.shape[d] > 1]
    return torch.stack(terms).sum() if terms else w.new_zeros(())

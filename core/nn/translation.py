"""Relaxed translation convolution and the locally connected layer (soft translation symmetry).

Relaxed translation conv: ``out(x) = sum_l w_l(x) (f * psi_l)(x)`` with per-pixel bank weights
``w`` of shape ``[L, H, W]``. All L banks run as one conv2d with ``L * out`` channels; the weighted
sum over banks is one broadcast multiply. With ``w`` equal everywhere (the initial state) the layer
is an ordinary convolution; where ``w`` varies, translation symmetry is broken, and the map of ``w``
shows where.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import neighbour_abs_difference


def _check_grid(layer: nn.Module, x: torch.Tensor) -> None:
    if tuple(x.shape[-2:]) != layer.grid:
        raise ValueError(f"{type(layer).__name__} was built for grid (H, W) = {layer.grid}, "
                         f"got input of spatial size {tuple(x.shape[-2:])}")


class RelaxedTranslationConv(nn.Module):
    """Args: in/out channels, kernel_size (odd), num_banks L, grid (H, W), padding_mode
    ("zeros" or "circular"; circular makes uniform weights exactly shift-equivariant)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 num_banks: int = 1, grid: tuple[int, int] = (64, 64),
                 padding_mode: str = "zeros", bias: bool = True):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.num_banks = kernel_size, num_banks
        self.grid = (int(grid[0]), int(grid[1]))
        self.padding_mode = padding_mode
        self.banks = nn.Parameter(torch.empty(num_banks * out_channels, in_channels,
                                              kernel_size, kernel_size))
        self.weights = nn.Parameter(torch.ones(num_banks, *self.grid))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size ** 2
        with torch.no_grad():
            self.banks.normal_(0.0, math.sqrt(2.0 / fan_in) / math.sqrt(self.num_banks))
            self.weights.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    @property
    def relaxed_weight(self) -> torch.Tensor:
        """The live per-pixel bank weights ``[L, H, W]``."""
        return self.weights

    def symmetry_penalty(self) -> torch.Tensor:
        """R = mean |w(x) - w(x')| over neighbouring pixels, along y and x."""
        return neighbour_abs_difference(self.weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(self, x)
        p = self.kernel_size // 2
        if self.padding_mode == "circular":
            y = F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), self.banks)
        else:
            y = F.conv2d(x, self.banks, padding=p)
        y = y.unflatten(1, (self.num_banks, self.out_channels))
        out = (y * self.weights[None, :, None]).sum(1)
        return out if self.bias is None else out + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"num_banks={self.num_banks}, grid={self.grid}, padding_mode={self.padding_mode}")


class LocallyConnected2d(nn.Module):
    """A convolution whose kernel may differ at every pixel: weights ``[H*W, in*k*k, out]``,
    initialised to one kernel copied everywhere (an ordinary convolution). The soft penalty
    R = mean |kernel(x) - kernel(x')| over neighbouring pixels pulls it back toward a convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 grid: tuple[int, int] = (64, 64), bias: bool = True):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.grid = (int(grid[0]), int(grid[1]))
        # pixel-major layout: one batched matmul over pixels (faster than an einsum over [out, in])
        self.weight = nn.Parameter(torch.empty(self.grid[0] * self.grid[1],
                                               in_channels * kernel_size ** 2, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size ** 2
        with torch.no_grad():
            shared = torch.randn(fan_in, self.out_channels) * math.sqrt(2.0 / fan_in)
            self.weight.copy_(shared.expand_as(self.weight))
            if self.bias is not None:
                self.bias.zero_()

    @property
    def relaxed_weight(self) -> torch.Tensor:
        return self.weight

    def symmetry_penalty(self) -> torch.Tensor:
        # [H, W, in*kk*out]: neighbour slices stay contiguous, which matters at ~10^8 weights
        return neighbour_abs_difference(self.weight.view(*self.grid, -1), dims=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(self, x)
        cols = F.unfold(x, self.kernel_size, padding=self.kernel_size // 2)  # [B, in*kk, H*W]
        out = torch.bmm(cols.permute(2, 0, 1), self.weight).permute(1, 2, 0).unflatten(2, self.grid)
        return out if self.bias is None else out + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, grid={self.grid}"

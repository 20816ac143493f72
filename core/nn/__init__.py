"""Relaxed and strict equivariant layers. Each relaxed layer exposes ``relaxed_weight`` (the live
parameter, or None when strict) and ``symmetry_penalty()`` (R, zero exactly when symmetric)."""
from .cache import CachedKernel
from .group_conv import KernelAction, RelaxedGroupConv
from .scale import RelaxedScaleConv, scale_basis
from .steerable import GatedNonlinearity, RelaxedSteerableConv, steerable_basis
from .translation import LocallyConnected2d, RelaxedTranslationConv

__all__ = ["CachedKernel", "KernelAction", "RelaxedGroupConv", "RelaxedSteerableConv",
           "GatedNonlinearity", "steerable_basis", "RelaxedTranslationConv", "LocallyConnected2d",
           "RelaxedScaleConv", "scale_basis"]

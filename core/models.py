"""Model zoo: a spec (name, group, sizes, banks, alpha) -> nn.Module.

Every model maps a velocity stack ``[B, 2 * in_frames, H, W]`` to the next frame ``[B, 2, H, W]``
and exposes

* ``.spec``: a JSON-serialisable dict; ``build_model(**spec)`` rebuilds the same architecture;
* ``.relaxed_weights()``: layer name -> the live relaxed parameter (empty for strict models);
* ``.penalty()``: ``alpha * R`` as a 0-dim tensor, R the sum over relaxed layers of each layer's
  symmetry penalty (zero exactly when that layer's relaxed weights are symmetric).

Width: ``hidden_dim`` is the number of feature channels per pixel, the same for every family, so
models compare at equal activation size: group models use ``hidden_dim // |G|`` regular fields
(at least 1), steerable models split the channels into scalars and vector fields, scale models
use ``hidden_dim // (number of scales)`` fields per scale (at least 1).

Groups per model (``SpecError`` names the valid choices otherwise):

======================  =========================================================================
mlp, conv               None or "translation"
gconv                   C<n>, D<n> (exact for n in 1, 2, 4)
steer, rsteer           C<n>, SO2 (exact for 90 degree rotations), "scale" (approximate: see
                        :class:`ScaleNet`)
rgroup                  "translation" (relaxed translation conv), C<n>, D<n>
rpp, lift, combo        C<n>, D<n>
constrained             "translation"
======================  =========================================================================

``num_banks > 1`` applies to rgroup only; ``num_layers >= 2`` everywhere (input and output layer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError
from .groups import (RotationGroup, ScaleGroup, SO2Group, TranslationGroup, _PlanarGroup,
                     get_group)
from .nn import (GatedNonlinearity, LocallyConnected2d, RelaxedGroupConv, RelaxedScaleConv,
                 RelaxedSteerableConv, RelaxedTranslationConv)

MODEL_NAMES = ("mlp", "conv", "gconv", "steer", "rgroup", "rsteer", "rpp", "lift", "combo",
               "constrained")

_FINITE = ("C<n>", "D<n>")
_ALLOWED = {
    "mlp": (None, "translation"), "conv": (None, "translation"), "gconv": _FINITE,
    "steer": ("C<n>", "SO2", "scale"), "rsteer": ("C<n>", "SO2", "scale"),
    "rgroup": ("translation", *_FINITE),
    "rpp": _FINITE, "lift": _FINITE, "combo": _FINITE, "constrained": ("translation",),
}


def _group_kind(group) -> str | None:
    if group is None:
        return None
    if isinstance(group, TranslationGroup):
        return "translation"
    if isinstance(group, SO2Group):
        return "SO2"
    if isinstance(group, ScaleGroup):
        return "scale"
    return "C<n>" if isinstance(group, RotationGroup) else "D<n>"


def models_for_group(group) -> list[str]:
    """The model names (in :data:`MODEL_NAMES` order) that accept ``group`` (a name, a Group or
    None), e.g. ``models_for_group("SO2") == ["steer", "rsteer"]``; ValueError for an unknown
    group name."""
    kind = _group_kind(None if group is None else get_group(group))
    return [m for m in MODEL_NAMES if kind in _ALLOWED[m]]


class ZooModel(nn.Module):
    """Base for every model of the zoo: spec, relaxed weights and penalty in one place."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = dict(spec)
        self.alpha = float(spec["alpha"])

    def _relaxed_layers(self):
        for name, module in self.named_modules():
            if getattr(module, "relaxed_weight", None) is not None:
                yield name, module

    def relaxed_weights(self) -> dict[str, torch.Tensor]:
        """Layer name -> its live relaxed parameter (the tensor itself, not a copy)."""
        return {name: m.relaxed_weight for name, m in self._relaxed_layers()}

    def penalty(self) -> torch.Tensor:
        """``alpha * R``: a 0-dim tensor on the model's device, differentiable, 0 for strict models."""
        terms = [m.symmetry_penalty() for _, m in self._relaxed_layers()]
        if not terms:
            ref = next(self.parameters())
            return ref.new_zeros(())
        return self.alpha * torch.stack(terms).sum()

    def extra_repr(self) -> str:
        return f"name={self.spec['name']!r}, group={self.spec['group']!r}, alpha={self.alpha}"


class MLP(ZooModel):
    def __init__(self, spec):
        super().__init__(spec)
        h, w = spec["grid"]
        sizes = [2 * spec["in_frames"] * h * w] + [spec["hidden_dim"]] * (spec["num_layers"] - 1)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(nn.Flatten(), *layers, nn.Linear(sizes[-1], 2 * h * w))
        self.grid = (h, w)

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"mlp was built for grid {self.grid}, got {tuple(x.shape[-2:])}")
        return self.net(x).view(-1, 2, *self.grid)


def _stack(layers: list[nn.Module]) -> nn.Sequential:
    """Interleave ReLU between layers (none after the last)."""
    mods = []
    for i, layer in enumerate(layers):
        mods.append(layer)
        if i < len(layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class ConvNet(ZooModel):
    """Plain CNN, relaxed translation net (rgroup/translation) or constrained locally connected net."""

    def __init__(self, spec):
        super().__init__(spec)
        chans = [2 * spec["in_frames"]] + [spec["hidden_dim"]] * (spec["num_layers"] - 1) + [2]
        k, grid = spec["kernel_size"], tuple(spec["grid"])
        make = {
            "conv": lambda a, b: nn.Conv2d(a, b, k, padding=k // 2),
            "rgroup": lambda a, b: RelaxedTranslationConv(a, b, k, spec["num_banks"], grid),
            "constrained": lambda a, b: LocallyConnected2d(a, b, k, grid),
        }[spec["name"]]
        self.net = _stack([make(a, b) for a, b in zip(chans[:-1], chans[1:])])

    def forward(self, x):
        return self.net(x)


def _fields(spec, group) -> int:
    return max(1, spec["hidden_dim"] // group.order)


class SymmetrizedConv(nn.Module):
    """A free convolution between group feature types, started at an equivariant weight; its
    penalty R = mean_h |h * W - W| measures the distance from equivariance (combo's free layers)."""

    def __init__(self, strict: RelaxedGroupConv):
        super().__init__()
        self.action = strict.action
        self.in_rep, self.out_rep = strict.in_rep, strict.out_rep
        self.padding = strict.kernel_size // 2
        with torch.no_grad():
            self.weight = nn.Parameter(strict.build_kernel().clone())
        self.bias = None
        if strict.bias is not None:
            reps = strict.group.order if strict.out_rep == "regular" else 1
            self.bias = nn.Parameter(strict.bias.detach().repeat_interleave(reps).clone())

    @property
    def relaxed_weight(self):
        return self.weight

    def symmetry_penalty(self):
        return self.action.symmetry_defect(self.weight, self.in_rep, self.out_rep)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)


class ZeroStarted:
    """Mixin for symmetry-breaking weights that start at zero: R = mean |W| (0 exactly at init)."""

    @property
    def relaxed_weight(self):
        return self.weight

    def symmetry_penalty(self):
        return self.weight.abs().mean()


class FreePath(ZeroStarted, nn.Conv2d):
    """Residual pathway prior's free path: an unconstrained conv started at zero."""

    def __init__(self, like: RelaxedGroupConv):
        g = like.group.order
        dims = {"regular": g, "vector": 2, "scalar": 1}
        super().__init__(like.in_fields * dims[like.in_rep], like.out_fields * dims[like.out_rep],
                         like.kernel_size, padding=like.kernel_size // 2, bias=False)
        nn.init.zeros_(self.weight)


class GroupNet(ZooModel):
    """Group-conv networks: lift (vector -> regular), group convs, projection (regular -> vector).

    gconv: strict; rgroup: every layer relaxed with L banks; rpp: strict layers plus zero-started
    free paths; combo: the first ``num_layers // 2`` layers free (started equivariant), the rest
    strict; lift: strict backbone plus an MLP encoding of the whole input added to the first
    hidden layer as a per-field context (its last layer starts at zero).
    """

    def __init__(self, spec, group):
        super().__init__(spec)
        name, k, n_layers = spec["name"], spec["kernel_size"], spec["num_layers"]
        c = _fields(spec, group)
        relaxed = name == "rgroup"
        L = spec["num_banks"] if relaxed else 1
        plan = ([("vector", spec["in_frames"], "regular", c)]
                + [("regular", c, "regular", c)] * (n_layers - 2)
                + [("regular", c, "vector", 1)])
        layers = [RelaxedGroupConv(group, fi, fo, ri, ro, k, L, relaxed=relaxed)
                  for ri, fi, ro, fo in plan]
        if name == "combo":
            layers = [SymmetrizedConv(l) if i < n_layers // 2 else l for i, l in enumerate(layers)]
        self.layers = nn.ModuleList(layers)
        self.free = nn.ModuleList(FreePath(l) for l in layers) if name == "rpp" else None
        self.encoder = None
        if name == "lift":
            hidden = spec["hidden_dim"]
            self.encoder = nn.Sequential(
                nn.AdaptiveAvgPool2d(8), nn.Flatten(),
                nn.Linear(2 * spec["in_frames"] * 64, hidden), nn.ReLU(),
                ContextHead(hidden, c))
        self.order = group.order

    def forward(self, x):
        context = None
        if self.encoder is not None:
            context = self.encoder(x).repeat_interleave(self.order, 1)[:, :, None, None]
        for i, layer in enumerate(self.layers):
            y = layer(x)
            if self.free is not None:
                y = y + self.free[i](x)
            if i == 0 and context is not None:
                y = y + context
            x = F.relu(y) if i < len(self.layers) - 1 else y
        return x


class ContextHead(ZeroStarted, nn.Linear):
    """lift's symmetry-breaking context: a bias-free linear map started at zero."""

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, bias=False)
        nn.init.zeros_(self.weight)


class SteerableNet(ZooModel):
    """steer / rsteer: steerable convs from ``in_frames`` vector fields through gated hidden
    layers of ``hidden_dim`` channels (a quarter as gated vector fields) to one vector field."""

    def __init__(self, spec, group):
        super().__init__(spec)
        relaxed, k, h = spec["name"] == "rsteer", spec["kernel_size"], spec["hidden_dim"]
        vectors = max(1, h // 4)
        scalars = max(1, h - 3 * vectors)
        mods = []
        fields_in = (0, spec["in_frames"])
        for _ in range(spec["num_layers"] - 1):
            mods.append(RelaxedSteerableConv(group, fields_in, (scalars + vectors, vectors), k,
                                             relaxed=relaxed))
            mods.append(GatedNonlinearity(scalars, vectors))
            fields_in = (scalars, vectors)
        mods.append(RelaxedSteerableConv(group, fields_in, (0, 1), k, relaxed=relaxed))
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


class ScaleNet(ZooModel):
    """steer / rsteer with group "scale": scale-equivariant convs on a Hermite-Gaussian basis
    sampled at the group's scale factors (:mod:`core.nn.scale`).

    Lift: the ``2 * in_frames`` velocity channels (u and v as scalar channels) -> ``c`` fields at
    every scale, ``c = max(1, hidden_dim // S)``, so ``c * S`` channels per pixel; then
    ``num_layers - 2`` scale convs that keep the scales apart (scale_size 1: the same filters
    dilated to each scale), ReLU after every hidden layer; the last layer is a scale conv to one
    (u, v) pair per scale, averaged over the scales (the pooled projection). No biases anywhere,
    so the network is positively homogeneous: ``net(a x) = a net(x)`` for ``a > 0`` exactly,
    which is the magnitude part of the scale action on velocity fields. A zoom maps the per-scale
    paths onto each other (:meth:`per_scale`), up to the grid; the output averages the paths over
    a truncated window of scales, which a zoom shifts, so the model as a whole is only
    approximately zoom-equivariant (measured and reported in the tests, never assumed).
    rsteer relaxes every layer (coefficients per scale and kernel offset, started constant).
    """

    def __init__(self, spec, group: ScaleGroup):
        super().__init__(spec)
        relaxed, k = spec["name"] == "rsteer", spec["kernel_size"]
        scales = group.sorted_scales()
        c = max(1, spec["hidden_dim"] // len(scales))
        fields = [2 * spec["in_frames"]] + [c] * (spec["num_layers"] - 1)
        layers = []
        for i, (a, b) in enumerate(zip(fields[:-1], fields[1:])):
            layers.append(RelaxedScaleConv(scales, a, b, "scalar" if i == 0 else "scale", "scale",
                                           k, relaxed=relaxed))
        layers.append(RelaxedScaleConv(scales, fields[-1], 2, "scale", "pooled", k,
                                       relaxed=relaxed))
        self.net = _stack(layers)
        self.scales = scales

    def forward(self, x):
        return self.net(x)

    def per_scale(self, x: torch.Tensor) -> torch.Tensor:
        """What each scale path predicts, ``[B, S, 2, H, W]`` (scales ascending); ``forward`` is
        its mean over the scale axis. Under a zoom by ``a`` that maps scale ``s`` of the window
        onto scale ``a s`` (e.g. 1 -> 2 for a = 2), path ``a s`` of the zoomed input is the zoom
        of path ``s`` of the original: the equivariance of the scale layers themselves, which
        the mean over a truncated window of scales only approximates."""
        *hidden, last = [m for m in self.net if isinstance(m, RelaxedScaleConv)]
        for layer in hidden:
            x = F.relu(layer(x))
        return last.per_scale(x).unflatten(1, (len(self.scales), -1))


def _positive_int(spec, key, minimum=1):
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _validate(spec: dict):
    name = spec["name"]
    if name not in MODEL_NAMES:
        raise SpecError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    for key in ("in_frames", "hidden_dim", "kernel_size", "num_banks"):
        _positive_int(spec, key)
    _positive_int(spec, "num_layers", 2)
    if spec["kernel_size"] % 2 == 0:
        raise SpecError(f"kernel_size must be odd, got {spec['kernel_size']}")
    if spec["num_banks"] != 1 and name != "rgroup":
        raise SpecError(f"num_banks applies to rgroup only; {name} needs num_banks=1, "
                        f"got {spec['num_banks']}")
    alpha = spec["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or alpha < 0:
        raise SpecError(f"alpha must be a finite number >= 0, got {alpha!r}")
    grid = spec["grid"]
    if (not isinstance(grid, (list, tuple)) or len(grid) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in grid)):
        raise SpecError(f"grid must be (H, W) with two positive integers, got {grid!r}")
    try:
        group = None if spec["group"] is None else get_group(spec["group"])
    except ValueError as err:
        raise SpecError(f"group: {err}") from None
    kind = _group_kind(group)
    if kind not in _ALLOWED[name]:
        valid = " or ".join("None" if a is None else repr(a) for a in _ALLOWED[name])
        raise SpecError(f"model {name!r} does not support group {spec['group']!r}; "
                        f"valid groups: {valid}")
    return group


def build_model(name: str, *, group: str | None = None, in_frames: int = 10, hidden_dim: int = 32,
                num_layers: int = 5, kernel_size: int = 3, num_banks: int = 1, alpha: float = 0.0,
                grid: tuple[int, int] | list[int] = (64, 64)) -> ZooModel:
    """Build a model of the zoo from its spec; see the module docstring for names and groups.

    Raises SpecError (a ValueError) naming the field and the valid choices for any impossible
    combination. The returned model's ``.spec`` rebuilds it: ``build_model(**model.spec)``.
    """
    spec = dict(name=name, group=group, in_frames=in_frames, hidden_dim=hidden_dim,
                num_layers=num_layers, kernel_size=kernel_size, num_banks=num_banks,
                alpha=alpha, grid=list(grid) if isinstance(grid, (list, tuple)) else grid)
    group_obj = _validate(spec)
    spec["alpha"] = float(alpha)
    if name == "mlp":
        return MLP(spec)
    if name in ("conv", "constrained") or (name == "rgroup" and spec["group"] == "translation"):
        return ConvNet(spec)
    if name in ("steer", "rsteer") and isinstance(group_obj, ScaleGroup):
        return ScaleNet(spec, group_obj)
    if name in ("steer", "rsteer"):
        return SteerableNet(spec, group_obj)
    assert isinstance(group_obj, _PlanarGroup)
    return GroupNet(spec, group_obj)

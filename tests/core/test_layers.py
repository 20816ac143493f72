"""Layers: translation relaxation, steerable basis, eval cache, fused expansion."""
import math

import pytest
import torch
import torch.nn.functional as F

from core.groups import Element, SO2Group, get_group, transform_field, transform_scalar
from core.nn import (KernelAction, RelaxedGroupConv, RelaxedSteerableConv,
                     RelaxedTranslationConv, steerable_basis)

from .conftest import small_model


# ---------------------------------------------------------------- relaxed translation conv
def test_uniform_weights_with_circular_padding_are_exactly_shift_equivariant(float64):
    layer = RelaxedTranslationConv(3, 5, 3, num_banks=3, grid=(9, 11), padding_mode="circular")
    x = torch.randn(2, 3, 9, 11)
    for shift in [(1, 0), (0, 3), (-2, 5), (4, -1)]:
        lhs = layer(torch.roll(x, shift, (-2, -1)))
        rhs = torch.roll(layer(x), shift, (-2, -1))
        assert (lhs - rhs).abs().max() < 1e-12


def test_uniform_weights_equal_an_ordinary_convolution(float64):
    layer = RelaxedTranslationConv(3, 4, 3, num_banks=2, grid=(8, 8))
    x = torch.randn(1, 3, 8, 8)
    summed = layer.banks.view(2, 4, 3, 3, 3).sum(0)
    torch.testing.assert_close(layer(x), F.conv2d(x, summed, layer.bias, padding=1))


def test_shift_error_sits_exactly_where_the_weights_vary(float64):
    grid = (9, 13)
    layer = RelaxedTranslationConv(2, 3, 3, num_banks=2, grid=grid, padding_mode="circular")
    q = (2, 10)  # row (y), column (x): a non-square grid catches swapped axes
    with torch.no_grad():
        layer.weights[:, q[0], q[1]] += 1.0
    shift = (3, 1)
    x = torch.randn(1, 2, *grid)
    err = (layer(torch.roll(x, shift, (-2, -1))) - torch.roll(layer(x), shift, (-2, -1)))
    err = err.abs().amax(dim=(0, 1))
    where = {tuple(p) for p in (err > 1e-10).nonzero().tolist()}
    assert where == {q, ((q[0] + shift[0]) % grid[0], (q[1] + shift[1]) % grid[1])}


def test_translation_penalty_sees_neighbour_differences():
    layer = RelaxedTranslationConv(1, 1, 3, num_banks=1, grid=(4, 4))
    assert layer.symmetry_penalty().item() == 0.0
    with torch.no_grad():
        layer.weights[0, :, 2:] = 2.0  # a step along x
    # 4 of the 12 horizontal neighbour pairs differ by 1; no vertical pair differs
    assert layer.symmetry_penalty().item() == pytest.approx(4 / 12)


# ---------------------------------------------------------------- group conv machinery
def test_kernel_transforms_are_permutations_for_exact_groups():
    for name in ("C4", "D4"):
        T = KernelAction(name, 5).T
        assert set(T.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(T.sum(1), torch.ones(T.shape[0], 25))
        assert torch.equal(T.sum(2), torch.ones(T.shape[0], 25))


@pytest.mark.parametrize("in_rep, out_rep", [("vector", "regular"), ("scalar", "regular"),
                                             ("regular", "regular"), ("regular", "vector"),
                                             ("regular", "scalar")])
def test_every_layer_type_is_equivariant_and_orbit_fixes_its_kernel(float64, in_rep, out_rep):
    group = get_group("D4")
    layer = RelaxedGroupConv(group, 2, 3, in_rep, out_rep, 3, num_banks=2).eval()
    K = layer.build_kernel()
    assert torch.equal(layer.action.orbit(K, in_rep, out_rep), K.expand(8, *K.shape))
    dims = {"scalar": 1, "vector": 2, "regular": 8}
    x = torch.randn(1, 2 * dims[in_rep], 7, 7)

    def act(t, rep, g):
        if rep == "vector":
            return transform_field(t, group, g)
        moved = transform_scalar(t, group, g)
        if rep == "regular":  # f'(x, k) = f(g^-1 x, g^-1 k)
            perm = group.inverse_product()[g]
            moved = moved.unflatten(1, (-1, 8))[:, :, perm].flatten(1, 2)
        return moved

    y = layer(x)
    for g in range(8):
        assert (layer(act(x, in_rep, g)) - act(y, out_rep, g)).abs().max() < 1e-12


def test_symmetry_defect_is_zero_only_on_equivariant_kernels(float64):
    layer = RelaxedGroupConv("C4", 2, 2, "vector", "regular", 3)
    K = layer.build_kernel()
    assert layer.action.symmetry_defect(K, "vector", "regular").item() == 0.0
    assert layer.action.symmetry_defect(torch.randn_like(K), "vector", "regular").item() > 0.1


def test_strict_layer_has_no_trainable_bank_weights():
    strict = RelaxedGroupConv("C4", 2, 2, "regular", "regular", relaxed=False)
    assert strict.relaxed_weight is None
    assert "weights" not in dict(strict.named_parameters())
    with pytest.raises(ValueError, match="num_banks"):
        RelaxedGroupConv("C4", 2, 2, relaxed=False, num_banks=2)


# ---------------------------------------------------------------- eval cache
@pytest.mark.parametrize("make", [
    lambda: RelaxedGroupConv("C4", 2, 3, "regular", "regular", 3, num_banks=2),
    lambda: RelaxedSteerableConv("C4", (2, 1), (1, 2), 3),
])
def test_eval_cache_equals_fresh_and_is_invalidated(make):
    layer = make().eval()
    with torch.no_grad():
        first = layer.kernel()
        assert layer.kernel() is first, "eval mode reuses the cached kernel"
        assert torch.equal(first, layer.build_kernel())
        # an in-place edit of a weight is seen
        next(layer.parameters()).add_(1.0)
        edited = layer.kernel()
        assert edited is not first and torch.equal(edited, layer.build_kernel())
    layer.train()
    assert layer._kernel_cache is None
    assert layer.kernel() is not layer.kernel(), "training builds the kernel every forward"
    layer.eval()
    with torch.no_grad():
        cached = layer.kernel()
        other = make()
        layer.load_state_dict(other.state_dict())
        assert layer._kernel_cache is None
        assert torch.equal(layer.kernel(), other.build_kernel())
        assert not torch.equal(layer.kernel(), cached)


def test_model_outputs_follow_loaded_weights_in_eval():
    a, b = small_model("rgroup", "C4", seed=0).eval(), small_model("rgroup", "C4", seed=1).eval()
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        a(x)  # fill the cache
        a.load_state_dict(b.state_dict())
        assert torch.equal(a(x), b(x))


def test_grad_through_eval_mode_is_not_cached():
    layer = RelaxedGroupConv("C4", 1, 1, "regular", "regular").eval()
    out = layer(torch.randn(1, 4, 5, 5)).sum()
    out.backward()
    assert layer.weights.grad is not None
    assert layer._kernel_cache is None


# ---------------------------------------------------------------- steerable basis
@pytest.mark.parametrize("group", ["C4", "SO2", "C8"])
@pytest.mark.parametrize("m, n", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_steerable_basis_is_orthonormal_and_quarter_turn_equivariant(group, m, n):
    basis = steerable_basis(group, 2, m, n, 5)
    flat = basis.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(len(basis), dtype=torch.float64))
    quarter = Element(math.pi / 2)
    rot = {0: torch.ones(1, 1, dtype=torch.float64), 1: quarter.matrix}
    # K(g z) = rho_n(g) K(z) rho_m(g)^-1  <=>  (g . K)(z) = K(g^-1 z) = rho_n^-1 K(z) rho_m
    moved = transform_scalar(basis, "C4", 1)
    expected = torch.einsum("ba,kbchw,cd->kadhw", rot[n], basis, rot[m])
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-12)


def test_so2_basis_is_smaller_than_c4_basis():
    """Continuous rotations constrain more than quarter turns."""
    assert len(steerable_basis("SO2", 2, 1, 1, 5)) < len(steerable_basis("C4", 0, 1, 1, 5))


def test_steerable_bias_only_on_scalar_fields(float64):
    layer = RelaxedSteerableConv("C4", (1, 1), (2, 3), 3)
    assert layer.bias.shape == (2,)
    with torch.no_grad():
        layer.bias.fill_(1.0)
    out = layer(torch.zeros(1, 3, 5, 5))
    assert torch.equal(out[:, :2], torch.ones_like(out[:, :2]))
    assert torch.equal(out[:, 2:], torch.zeros_like(out[:, 2:]))
    assert RelaxedSteerableConv("C4", (1, 1), (0, 1), 3).bias is None


def test_relaxed_steerable_coefficients_start_constant_over_offsets():
    layer = RelaxedSteerableConv("SO2", (0, 2), (3, 1), 3, relaxed=True)
    assert layer.relaxed_weight.shape[1] == 9
    assert torch.equal(layer.coeff, layer.coeff[:, :1].expand_as(layer.coeff))
    assert layer.symmetry_penalty().item() == 0.0


def _smooth_field(size=32, seed=0):
    coarse = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2,
                            torch.arange(size) - (size - 1) / 2, indexing="ij")
    window = torch.exp(-(xx ** 2 + yy ** 2) / (2 * (size / 6) ** 2))  # keep the corners quiet
    return field * window


def _rotation_error(model, x, angle):
    g = Element(angle)
    with torch.no_grad():
        lhs = model(transform_field(x, SO2Group(), g))
        rhs = transform_field(model(x), SO2Group(), g)
    size = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2,
                            torch.arange(size) - (size - 1) / 2, indexing="ij")
    inner = (xx ** 2 + yy ** 2) < (size / 3) ** 2
    return float((lhs - rhs)[..., inner].norm() / rhs[..., inner].norm())


@pytest.mark.parametrize("name, group", [("steer", "SO2"), ("steer", "C8"), ("gconv", "C8")])
def test_45_degree_error_is_measured_and_reported(float64, name, group):
    """Only quarter turns are exact on a square grid: 45 degrees is measured, not assumed zero."""
    x = _smooth_field()
    model = small_model(name, group, grid=(32, 32)).eval()
    conv = small_model("conv", "translation", grid=(32, 32)).eval()
    err, err_conv = _rotation_error(model, x, math.pi / 4), _rotation_error(conv, x, math.pi / 4)
    print(f"\n[report] 45-degree equivariance error {name}/{group}: {err:.3f} "
          f"(plain CNN on the same input: {err_conv:.3f})")
    assert math.isfinite(err) and err > 0
    assert err < 0.5 * err_conv, "approximate equivariance should beat no equivariance"
    assert _rotation_error(model, x, math.pi / 2) < 1e-10

"""Groups and their actions: names, elements, orientation convention, exactness, group law."""
import math

import pytest
import torch

from core.groups import (Element, SO2Group, get_group, interpolation_error, transform_field,
                         transform_scalar, valid_group_names)


def divergence(f):
    """Central-difference divergence of [..., 2, H, W] (u along x = W, v along y = H)."""
    u, v = f[..., 0, :, :], f[..., 1, :, :]
    return (u[..., 1:-1, 2:] - u[..., 1:-1, :-2]) / 2 + (v[..., 2:, 1:-1] - v[..., :-2, 1:-1]) / 2


def curl(f):
    u, v = f[..., 0, :, :], f[..., 1, :, :]
    return (v[..., 1:-1, 2:] - v[..., 1:-1, :-2]) / 2 - (u[..., 2:, 1:-1] - u[..., :-2, 1:-1]) / 2


@pytest.mark.parametrize("name, order", [("C1", 1), ("C4", 4), ("C8", 8), ("D1", 2), ("D4", 8),
                                         ("D8", 16), ("C12", 12)])
def test_finite_groups_have_order_and_identity_first(name, order):
    g = get_group(name)
    assert g.name == name and g.order == order
    elements = g.elements()
    assert len(elements) == order and len(set(elements)) == order
    assert elements[0] == Element(0.0, False)


def test_infinite_groups_have_no_order():
    assert get_group("SO2").order is None
    assert get_group("translation").order is None
    assert get_group("SO2", band_limit=4).band_limit == 4
    with pytest.raises(TypeError):
        get_group("SO2").elements()


@pytest.mark.parametrize("bad", ["C0", "D-1", "SO3", "rotation", "", "c4", 4])
def test_unknown_group_lists_valid_names(bad):
    with pytest.raises(ValueError) as err:
        get_group(bad)
    for name in ("translation", "C4", "D4", "SO2"):
        assert name in str(err.value)


def test_valid_names_all_parse():
    for name in valid_group_names():
        assert get_group(name).name == name


def test_plus_90_turns_x_onto_y():
    """The documented convention: row index = y (up), +90 degrees is counter-clockwise."""
    f = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    f[0, 0, 2, 3] = 1.0  # a vector pointing +x, sitting at (x, y) = (+1, 0)
    out = transform_field(f, "C4", 1)
    expected = torch.zeros_like(f)
    expected[0, 1, 3, 2] = 1.0  # now pointing +y at (0, +1)
    assert torch.equal(out, expected)


def test_reflection_mirrors_x_and_flips_u():
    f = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    f[0, 0, 1, 4] = 1.0
    f[0, 1, 1, 4] = 2.0
    out = transform_field(f, "D4", 4)  # s: the x-mirror
    assert out[0, 0, 1, 0] == -1.0 and out[0, 1, 1, 0] == 2.0
    assert out.abs().sum() == 3.0


@pytest.mark.parametrize("name", ["C4", "D4", "D2", "C2"])
def test_action_is_a_group_action_exactly(name):
    """(a b) . x == a . (b . x) for every pair, bit for bit: compositions are permutations."""
    group = get_group(name)
    table = group.cayley()
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    for a in range(group.order):
        for b in range(group.order):
            lhs = transform_field(x, group, int(table[a, b]))
            rhs = transform_field(transform_field(x, group, b), group, a)
            assert torch.equal(lhs, rhs)


def test_inverse_product_table():
    group = get_group("D4")
    table, inv = group.cayley(), group.inverse_product()
    for g in range(8):
        for h in range(8):
            assert table[g, inv[g, h]] == h  # g (g^-1 h) = h


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_divergence_and_curl_transform_as_scalars(name):
    """A wrong component sign would break these: div is a scalar, curl a pseudo-scalar."""
    group = get_group(name)
    f = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    for i, g in enumerate(group.elements()):
        moved = transform_field(f, group, i)
        torch.testing.assert_close(divergence(moved), transform_scalar(divergence(f), group, i),
                                   rtol=0, atol=1e-12)
        sign = -1.0 if g.reflect else 1.0
        torch.testing.assert_close(curl(moved), sign * transform_scalar(curl(f), group, i),
                                   rtol=0, atol=1e-12)


def test_non_square_grids_swap_under_quarter_turns():
    f = torch.randn(1, 4, 6, 10)
    out = transform_field(f, "C4", 1)
    assert out.shape == (1, 4, 10, 6)
    back = transform_field(out, "C4", 3)
    assert torch.equal(back, f)


def test_translation_rolls_periodically():
    f = torch.arange(16.0).view(1, 1, 4, 4)
    out = transform_scalar(f, "translation", (1, 2))
    assert torch.equal(out, torch.roll(f, (1, 2), (-2, -1)))
    with pytest.raises(ValueError, match="dy, dx"):
        transform_scalar(f, "translation", 3)


def test_exact_angles_of_so2_use_permutations():
    f = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    assert torch.equal(transform_field(f, SO2Group(), math.pi / 2), transform_field(f, "C4", 1))


def test_interpolated_rotation_error_is_reported_not_zero():
    err45 = interpolation_error("SO2", size=64, angle=math.pi / 4)
    err90 = interpolation_error("SO2", size=64, angle=math.pi / 2)
    print(f"\n[report] bilinear 45-degree rotate-and-back relative error on a smooth 64x64 field: "
          f"{err45:.2e}; 90 degrees: {err90:.1e}")
    assert err90 == 0.0
    assert 0.0 < err45 < 0.1


def test_bad_elements_are_named():
    f = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="out of range"):
        transform_field(f, "C4", 4)
    with pytest.raises(ValueError, match="no reflections"):
        transform_field(f, "C4", Element(0.0, True))
    with pytest.raises(ValueError, match="even channel count"):
        transform_field(torch.zeros(1, 3, 4, 4), "C4", 1)

"""Model zoo: equivariance at init, relaxation, penalty, gradients, specs and errors."""
import json
import math

import pytest
import torch

from core import MODEL_NAMES, SpecError, build_model
from core.groups import transform_field

from .conftest import C4_MODELS, D4_MODELS, DEFAULT_GROUP, equivariance_error, small_model

RELAXED = [("rgroup", "C4"), ("rgroup", "D4"), ("rsteer", "C4"), ("rsteer", "SO2"),
           ("rpp", "C4"), ("lift", "D4"), ("combo", "C4"), ("combo", "D4")]


@pytest.mark.parametrize("name, group", C4_MODELS + D4_MODELS)
def test_fresh_models_are_exactly_equivariant(float64, name, group):
    """Through several layers with non-linearities, in float64, for every group element (C4 or D4;
    for SO2/C8 models the 90 degree rotations, which the grid allows exactly)."""
    model = small_model(name, group, num_layers=4).eval()
    x = torch.randn(2, 4, 12, 12)
    test_group = "D4" if group.startswith("D") else "C4"
    assert equivariance_error(model, x, test_group) < 1e-10


@pytest.mark.parametrize("name, group", [("gconv", "C4"), ("rgroup", "D4"), ("steer", "C4")])
def test_models_are_not_linear(float64, name, group):
    """Regression: the published group convs ignored their activation (a linear stack)."""
    model = small_model(name, group).eval()
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        assert (model(-x) + model(x)).abs().max() > 1e-3 * model(x).abs().max()


def _perturb(model, scale, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in model.relaxed_weights().values():
            w.add_(scale * torch.randn(w.shape, generator=gen, dtype=w.dtype))


@pytest.mark.parametrize("name, group", RELAXED)
def test_relaxation_breaks_equivariance_monotonically(float64, name, group):
    errors = []
    for scale in (0.0, 1e-3, 1e-2, 1e-1):
        model = small_model(name, group).eval()
        _perturb(model, scale)
        errors.append(equivariance_error(model, torch.randn(2, 4, 12, 12,
                                         generator=torch.Generator().manual_seed(3)),
                                         "D4" if group.startswith("D") else "C4"))
    assert errors[0] < 1e-10
    assert all(b > a for a, b in zip(errors, errors[1:])), errors
    assert errors[1] > 1e-6


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_group_mean_of_perturbed_weights_restores_exactness(float64, group):
    model = small_model("rgroup", group).eval()
    _perturb(model, 0.3)
    x = torch.randn(2, 4, 12, 12)
    assert equivariance_error(model, x, group) > 1e-4
    with torch.no_grad():
        for w in model.relaxed_weights().values():  # [L, |G|]
            w.copy_(w.mean(dim=1, keepdim=True).expand_as(w))
    assert equivariance_error(model, x, group) < 1e-10


def test_offset_mean_of_perturbed_steerable_coefficients_restores_exactness(float64):
    model = small_model("rsteer", "C4").eval()
    _perturb(model, 0.3)
    x = torch.randn(2, 4, 12, 12)
    assert equivariance_error(model, x, "C4") > 1e-4
    with torch.no_grad():
        for w in model.relaxed_weights().values():  # [coefficients, k*k]
            w.copy_(w.mean(dim=1, keepdim=True).expand_as(w))
    assert equivariance_error(model, x, "C4") < 1e-10


@pytest.mark.parametrize("name, group", RELAXED + [("rgroup", "translation"),
                                                   ("constrained", "translation")])
def test_penalty_zero_at_init_positive_after_perturbation(float64, name, group):
    model = small_model(name, group)
    assert model.relaxed_weights(), "relaxed model exposes its weights"
    assert model.penalty().item() == 0.0
    _perturb(model, 0.1)
    assert model.penalty().item() > 0.0


@pytest.mark.parametrize("name, group", RELAXED + [("rgroup", "translation")])
def test_penalty_is_linear_in_alpha_and_differentiable(float64, name, group):
    """Regression: the published penalty was (alpha * R)^2 and skipped off-GPU."""
    one = small_model(name, group, alpha=1.0)
    _perturb(one, 0.1)
    three = small_model(name, group, alpha=3.0)
    three.load_state_dict(one.state_dict())
    p1, p3 = one.penalty(), three.penalty()
    torch.testing.assert_close(p3, 3 * p1)
    zero = small_model(name, group, alpha=0.0)
    zero.load_state_dict(one.state_dict())
    assert zero.penalty().item() == 0.0
    p1.backward()
    for w in one.relaxed_weights().values():
        assert w.grad is not None and w.grad.abs().sum() > 0


def test_penalty_equals_alpha_times_mean_pairwise_differences(float64):
    model = small_model("rgroup", "C4", alpha=0.7)
    _perturb(model, 0.2)
    expected = 0.0
    for w in model.relaxed_weights().values():
        expected += (w[:, :, None] - w[:, None, :]).abs().mean()
    torch.testing.assert_close(model.penalty(), 0.7 * expected)
    assert model.penalty().device.type == "cpu"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_runs_forward_and_backward(name):
    model = small_model(name, DEFAULT_GROUP[name])
    model.train()
    x = torch.randn(3, 4, 12, 12)
    y = model(x)
    assert y.shape == (3, 2, 12, 12)
    loss = torch.nn.functional.mse_loss(y, torch.randn_like(y)) + model.penalty()
    loss.backward()
    for w in model.relaxed_weights().values():
        assert w.grad is not None and w.grad.abs().sum() > 0, "relaxed weight got no gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_non_square_grids_keep_height_and_width(name):
    model = small_model(name, DEFAULT_GROUP[name], grid=(10, 14))
    y = model(torch.randn(2, 4, 10, 14))
    assert y.shape == (2, 2, 10, 14)


@pytest.mark.parametrize("name, group", [("gconv", "C4"), ("rgroup", "D4"), ("steer", "C4"),
                                         ("lift", "C4")])
def test_non_square_equivariance(float64, name, group):
    """Regression: the published lifting layer swapped H and W on non-square grids."""
    model = small_model(name, group, grid=(10, 14)).eval()
    x = torch.randn(1, 4, 10, 14)
    with torch.no_grad():
        y = model(x)
        for g in (1, 2, 3):
            lhs, rhs = model(transform_field(x, "C4", g)), transform_field(y, "C4", g)
            assert lhs.shape == rhs.shape
            assert (lhs - rhs).abs().max() < 1e-10 * rhs.abs().max()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_spec_round_trip_rebuilds_identical_model(name):
    model = small_model(name, DEFAULT_GROUP[name]).eval()
    spec = json.loads(json.dumps(model.spec))
    assert spec == model.spec
    twin = build_model(**spec).eval()
    twin.load_state_dict(model.state_dict())
    assert twin.spec == model.spec
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
    assert [k for k, _ in twin.named_parameters()] == [k for k, _ in model.named_parameters()]


def test_relaxed_at_init_equals_strict(float64):
    """rgroup with one bank and rsteer at init compute exactly what their strict models do."""
    x = torch.randn(2, 4, 12, 12)
    for relaxed_name, strict_name, group in (("rgroup", "gconv", "D4"), ("rsteer", "steer", "C4")):
        relaxed = small_model(relaxed_name, group, num_banks=1).eval()
        strict = small_model(strict_name, group, seed=5).eval()
        state = {k: (v[:, :1] if k.endswith("coeff") else v)
                 for k, v in relaxed.state_dict().items() if k in strict.state_dict()}
        strict.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(relaxed(x), strict(x), rtol=0, atol=1e-12)


def test_strict_models_have_no_relaxed_weights():
    for name, group in (("gconv", "C4"), ("steer", "SO2"), ("conv", None), ("mlp", None)):
        model = small_model(name, group)
        assert model.relaxed_weights() == {}
        assert model.penalty().item() == 0.0


def test_relaxed_weights_are_the_live_parameters():
    model = small_model("rgroup", "C4")
    params = {id(p) for p in model.parameters()}
    for name, w in model.relaxed_weights().items():
        assert id(w) in params and isinstance(w, torch.nn.Parameter)
        assert w.shape == (2, 4), name


@pytest.mark.parametrize("kwargs, field", [
    (dict(name="nonsense"), "unknown model"),
    (dict(name="steer", group="D4"), "valid groups"),
    (dict(name="steer", group="translation"), "valid groups"),
    (dict(name="gconv", group=None), "valid groups"),
    (dict(name="gconv", group="SO2"), "valid groups"),
    (dict(name="constrained", group="C4"), "valid groups"),
    (dict(name="conv", group="C0"), "group"),
    (dict(name="conv", hidden_dim=0), "hidden_dim"),
    (dict(name="conv", in_frames=-1), "in_frames"),
    (dict(name="conv", num_layers=1), "num_layers"),
    (dict(name="conv", kernel_size=4), "kernel_size"),
    (dict(name="gconv", group="C4", num_banks=2), "num_banks"),
    (dict(name="rgroup", group="C4", num_banks=0), "num_banks"),
    (dict(name="rgroup", group="C4", alpha=-1.0), "alpha"),
    (dict(name="rgroup", group="C4", alpha=math.nan), "alpha"),
    (dict(name="conv", grid=(0, 4)), "grid"),
    (dict(name="conv", hidden_dim=2.5), "hidden_dim"),
])
def test_impossible_specs_raise_spec_error_naming_the_field(kwargs, field):
    kwargs = {"group": "translation", **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(SpecError, match=field) as err:
        build_model(name, **kwargs)
    assert isinstance(err.value, ValueError)
    if field == "unknown model":
        for valid in MODEL_NAMES:
            assert valid in str(err.value)


def test_grid_mismatch_is_a_clear_error():
    model = small_model("rgroup", "translation")
    with pytest.raises(ValueError, match=r"grid \(H, W\) = \(12, 12\)"):
        model(torch.randn(1, 4, 16, 16))

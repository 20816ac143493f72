"""Analysis: rollout RMSE, equivariance error, irrep decomposition and breaking analysis."""
import math

import numpy as np
import pytest
import torch
import xarray as xr

from core import build_model
from core.analysis import (boundary_location, breaking_analysis, breaking_score,
                           equivariance_error, invariant_subgroup, irrep_decomposition,
                           irrep_projectors, rollout_rmse)
from core.datasets import DatasetError, WindowDataset, generate
from core.groups import get_group

from .conftest import small_model

GROUPS = [f"C{n}" for n in range(1, 9)] + [f"D{n}" for n in range(1, 9)]


@pytest.fixture(scope="module")
def tiny_ds():
    return generate("rotation", grid=16, steps=40, sims=8, device="cpu")


def _tiny_model(name="conv", group="translation", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(name, group=group, in_frames=2, hidden_dim=8, num_layers=2, grid=(16, 16),
                       **kw)


# ------------------------------------------------------------------------------------ irreps
@pytest.mark.parametrize("name", GROUPS)
def test_projectors_are_a_complete_orthogonal_decomposition(name):
    group = get_group(name)
    labels, dims, P = irrep_projectors(name)
    eye = torch.eye(group.order, dtype=torch.float64)
    assert torch.allclose(P.sum(0), eye, atol=1e-12)
    for a in range(len(P)):
        assert torch.allclose(P[a] @ P[a], P[a], atol=1e-12)
        assert torch.allclose(P[a], P[a].T, atol=1e-12)
        for b in range(a + 1, len(P)):
            assert torch.allclose(P[a] @ P[b], torch.zeros_like(eye), atol=1e-12)
    # each isotypic block of the regular representation has dimension (multiplicity x dim) = d^2
    # for absolutely irreducible (D_n) irreps, and 2 for the real 2-dim irreps of C_n
    traces = [round(float(torch.trace(p))) for p in P]
    expected = [d * d if name.startswith("D") else d for d in dims]
    assert traces == expected and sum(traces) == group.order
    assert labels[0] == "trivial"


@pytest.mark.parametrize("name", ["C4", "C5", "C8", "D3", "D4", "D6"])
def test_energies_sum_to_total(name):
    group = get_group(name)
    w = torch.randn(3, group.order, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dec = irrep_decomposition(w, group)
    assert dec["energy"].dims == ("bank", "irrep")
    np.testing.assert_allclose(dec["energy"].sum("irrep").values, dec["total"].values, rtol=1e-12)
    np.testing.assert_allclose(dec["total"].values, (w ** 2).sum(1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(dec["fraction"].sum("irrep").values, 1.0, rtol=1e-12)
    assert 0 < dec.attrs["breaking_score"] < 1


def test_c4_irreps_are_the_real_fourier_modes():
    dec = irrep_decomposition(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "C4")
    assert list(dec["irrep"].values) == ["trivial", "sign", "freq1"]
    w = np.array([1.0, 2.0, 3.0, 4.0])
    f = np.fft.fft(w)
    expected = [abs(f[0]) ** 2 / 4, abs(f[2]) ** 2 / 4, 2 * abs(f[1]) ** 2 / 4]
    np.testing.assert_allclose(dec["energy"].values[0], expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["C4", "D4", "C3", "D5"])
def test_constant_weights_are_unbroken(name):
    group = get_group(name)
    w = torch.full((2, group.order), 0.7, dtype=torch.float64)
    assert breaking_score(w, group) == pytest.approx(0.0, abs=1e-15)
    dec = irrep_decomposition(w, group)
    assert float(dec["energy"].sel(irrep="trivial").sum()) == pytest.approx(float(dec["total"].sum()))
    assert invariant_subgroup(w, group) == [str(e) for e in group.elements()]


def test_period_two_weights_on_c4():
    w = torch.tensor([[1.0, 3.0, 1.0, 3.0], [0.5, -1.0, 0.5, -1.0]], dtype=torch.float64)
    dec = irrep_decomposition(w, "C4")
    assert float(dec["energy"].sel(irrep="freq1").sum()) < 1e-24
    assert float(dec["energy"].sel(irrep="sign").sum()) > 0.1
    sub = invariant_subgroup(w, "C4")
    assert sub == ["rot0", "rot180"] and len(sub) == 2
    assert 0 < breaking_score(w, "C4") < 1


def test_one_hot_perturbation_reaches_every_irrep():
    w = torch.ones(1, 4, dtype=torch.float64)
    w[0, 1] += 0.1
    dec = irrep_decomposition(w, "C4")
    assert (dec["energy"].values > 1e-6).all()
    assert invariant_subgroup(w, "C4") == ["rot0"]


def test_reflection_symmetric_perturbation_on_d4():
    group = get_group("D4")
    elements = group.elements()
    cayley = group.cayley()
    s = 4 + 1  # r s: a reflection
    assert elements[s].reflect
    v = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = 0.5 * (v + v[:, cayley[:, s]])  # v(g s') = v(g)
    w = 1.0 + 0.1 * v
    dec = irrep_decomposition(w, group)
    np.testing.assert_allclose(dec["energy"].sum("irrep").values, dec["total"].values, rtol=1e-12)
    assert breaking_score(w, group) > 1e-6
    sub = invariant_subgroup(w, group)
    assert sub == ["rot0", str(elements[s])]
    # without the symmetrisation the reflection is lost
    assert invariant_subgroup(1.0 + 0.1 * torch.randn(2, 8, dtype=torch.float64), group) == ["rot0"]


def test_weights_must_match_the_group():
    with pytest.raises(ValueError, match=r"\[L, 4\]"):
        irrep_decomposition(torch.ones(2, 8), "C4")
    with pytest.raises(ValueError, match="C<n> or D<n>"):
        irrep_decomposition(torch.ones(2, 4), "SO2")


# ------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_breaking_analysis_fresh_group_model(group):
    model = small_model("rgroup", group)
    ds = breaking_analysis(model)
    order = get_group(group).order
    assert ds.attrs["kind"] == "group"
    assert ds.attrs["breaking_score"] < 1e-12
    assert (ds["breaking_score"].values < 1e-12).all()
    assert ds["weights"].dims == ("layer", "bank", "element")
    assert ds["weights"].shape == (3, 2, order)
    assert ds["energy"].dims == ("layer", "irrep")
    assert (ds["subgroup_order"].values == order).all()
    np.testing.assert_allclose(ds["energy"].sum("irrep").values, ds["total"].values, rtol=1e-12)


def test_breaking_analysis_sees_a_period_two_layer():
    model = small_model("rgroup", "C4")
    with torch.no_grad():
        model.relaxed_weights()["layers.1"].copy_(torch.tensor([[1.0, 2.0, 1.0, 2.0]] * 2))
    ds = breaking_analysis(model)
    assert ds["subgroup_order"].sel(layer="layers.1") == 2
    assert str(ds["invariant_subgroup"].sel(layer="layers.1").values) == "rot0,rot180"
    assert ds["breaking_score"].sel(layer="layers.0") < 1e-12
    assert ds["breaking_score"].sel(layer="layers.1") > 0.01
    assert float(ds["energy"].sel(layer="layers.1", irrep="freq1")) < 1e-20


def test_breaking_analysis_translation_model_and_boundary():
    model = small_model("rgroup", "translation")
    ds = breaking_analysis(model)
    assert ds.attrs["kind"] == "translation"
    assert ds.attrs["breaking_score"] == 0.0
    assert ds["weights"].dims == ("layer", "bank", "y", "x")
    assert ds["gradient"].dims == ("layer", "y", "x")
    assert ds["x_profile"].dims == ("layer", "bank", "x")
    assert math.isnan(boundary_location(ds))
    W = 12
    with torch.no_grad():
        for w in model.relaxed_weights().values():
            w[..., : W // 2] = 1.0
            w[..., W // 2:] = 2.0
    ds = breaking_analysis(model)
    assert ds.attrs["breaking_score"] > 0.05
    x = boundary_location(ds)
    assert abs(x - W / 2) <= 1.0
    assert x == pytest.approx(W / 2)
    np.testing.assert_allclose(ds["y_profile"].values, 1.5)


def test_breaking_analysis_steerable_model():
    model = small_model("rsteer", "C4")
    ds = breaking_analysis(model)
    assert ds.attrs["kind"] == "steerable"
    assert ds.attrs["breaking_score"] < 1e-12
    assert ds["offset_variation"].dims == ("layer", "ky", "kx")
    with torch.no_grad():
        next(iter(model.relaxed_weights().values()))[:, 4] += 1.0  # the centre offset
    ds = breaking_analysis(model)
    first = ds["offset_variation"].isel(layer=0)
    assert float(first.sel(ky=0, kx=0)) == float(first.max()) > 0
    assert ds["variation"].isel(layer=0) > 0 and ds.attrs["breaking_score"] > 0


@pytest.mark.parametrize("name, group", [("rpp", "C4"), ("lift", "C4"), ("combo", "C4"),
                                         ("constrained", "translation")])
def test_breaking_analysis_other_models(name, group):
    model = small_model(name, group)
    ds = breaking_analysis(model)
    assert ds.attrs["kind"] == "other"
    assert ds["norm"].dims == ("layer",)
    assert np.isfinite(ds["norm"].values).all()
    if name in ("rpp", "lift"):
        assert (ds["norm"].values == 0).all()
    else:
        assert ds.attrs["breaking_score"] < 1e-10


def test_breaking_analysis_strict_model():
    ds = breaking_analysis(small_model("gconv", "C4"))
    assert ds.attrs["kind"] == "none" and ds.attrs["breaking_score"] == 0.0


# ------------------------------------------------------------------------------------ equivariance
def test_equivariance_error_of_gconv_is_zero_float64(float64):
    model = small_model("gconv", "C4")
    x = torch.randn(2, 4, 12, 12)
    err = equivariance_error(model, x, "C4")
    assert list(err["element"].values) == ["rot0", "rot90", "rot180", "rot270"]
    assert set(err.data_vars) == {"relative", "absolute"}
    assert (err["relative"].values < 1e-10).all()
    assert err.attrs["mean"] < 1e-10 and "RMS" in err.attrs["definition"]


def test_equivariance_error_of_gconv_float32_and_conv():
    x = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(0))
    err = equivariance_error(small_model("gconv", "D4"), x, "D4")
    assert len(err["element"]) == 8 and "rot90+flip" in err["element"].values
    assert (err["relative"].values < 1e-5).all()
    conv = equivariance_error(small_model("conv", "translation"), x, "D4")
    assert conv["relative"].sel(element="rot0") == 0
    assert conv.attrs["mean"] > 1e-2


def test_equivariance_error_so2_and_translation():
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    err = equivariance_error(_tiny_model("steer", "SO2"), x, "SO2")
    assert len(err["element"]) == 8 and err["element"].values[1] == "rot45"
    assert (err["relative"].sel(element=["rot90", "rot180", "rot270"]).values < 1e-5).all()
    assert "rot45" in err.attrs["interpolated"]
    tr = equivariance_error(_tiny_model("mlp", None), x, "translation")
    assert list(tr["element"].values) == ["0,0", "0,2", "2,0", "0,4", "4,4"]
    assert float(tr["relative"].sel(element="0,0")) == 0 and tr.attrs["mean"] > 1e-2


# ------------------------------------------------------------------------------------ rollout
def test_rollout_rmse_shape_and_attrs(tiny_ds):
    model = _tiny_model()
    rmse = rollout_rmse(model, tiny_ds, "future", steps=3, batch_size=5)
    assert isinstance(rmse, xr.DataArray)
    assert rmse.dims == ("step",) and list(rmse["step"].values) == [1, 2, 3]
    assert np.isfinite(rmse.values).all() and (rmse.values > 0).all()
    assert rmse.attrs["split"] == "future"
    assert rmse.attrs["n_samples"] == len(WindowDataset(tiny_ds, "future", 2, target_steps=3))
    assert rmse.attrs["mean"] == pytest.approx(float(rmse.mean()))
    assert model.training  # restored
    sub = rollout_rmse(model, tiny_ds, "domain", steps=2, max_samples=7)
    assert sub.attrs["n_samples"] == 7 and sub.attrs["split"] == "domain"


def test_rollout_rmse_matches_a_hand_computation(tiny_ds):
    model = _tiny_model().eval()
    windows = WindowDataset(tiny_ds, "future", 2, target_steps=2)
    x = torch.stack([windows[i][0] for i in range(len(windows))])
    y = torch.stack([windows[i][1] for i in range(len(windows))])
    with torch.no_grad():
        p1 = model(x)
        p2 = model(torch.cat([x[:, 2:], p1], 1))
    step1 = float(((p1 - y[:, 0]).double() ** 2).mean().sqrt())
    step2 = float(((p2 - y[:, 1]).double() ** 2).mean().sqrt())
    assert float(rollout_rmse(model, tiny_ds, "future", steps=2, batch_size=7)[1]) \
        == pytest.approx(step2, rel=1e-5)
    one = WindowDataset(tiny_ds, "future", 2, target_steps=1)
    x1 = torch.stack([one[i][0] for i in range(len(one))])
    y1 = torch.stack([one[i][1] for i in range(len(one))])
    with torch.no_grad():
        hand = float(((model(x1) - y1[:, 0]).double() ** 2).mean().sqrt())
    assert float(rollout_rmse(model, tiny_ds, "future", steps=1)[0]) == pytest.approx(hand, rel=1e-5)
    assert step1 > 0


def test_rollout_rmse_empty_split(tiny_ds):
    ds = tiny_ds.copy()
    ds.attrs = dict(tiny_ds.attrs, split_domain_sims=np.asarray([], dtype=np.int64))
    with pytest.raises(DatasetError, match="no samples"):
        rollout_rmse(_tiny_model(), ds, "domain", steps=2)
    with pytest.raises(DatasetError, match="no samples"):
        rollout_rmse(_tiny_model(), tiny_ds, "future", steps=30)

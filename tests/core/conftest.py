import pytest
import torch

from core import build_model
from core.groups import get_group, transform_field

# (model, group) pairs exercised for equivariance; every group-aware family appears.
C4_MODELS = [("gconv", "C4"), ("rgroup", "C4"), ("rpp", "C4"), ("lift", "C4"), ("combo", "C4"),
             ("steer", "C4"), ("rsteer", "C4"), ("steer", "SO2"), ("rsteer", "SO2"),
             ("steer", "C8"), ("gconv", "C8")]
D4_MODELS = [("gconv", "D4"), ("rgroup", "D4"), ("rpp", "D4"), ("lift", "D4"), ("combo", "D4")]
DEFAULT_GROUP = {"mlp": None, "conv": "translation", "gconv": "C4", "steer": "C4",
                 "rgroup": "C4", "rsteer": "C4", "rpp": "C4", "lift": "C4", "combo": "C4",
                 "constrained": "translation"}


@pytest.fixture
def float64():
    """Build and run in float64 so exactness checks are sharp."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def small_model(name, group, seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(group=group, in_frames=2, hidden_dim=16, num_layers=3, grid=(12, 12),
                  num_banks=2 if name == "rgroup" else 1, alpha=0.5)
    kwargs.update(overrides)
    return build_model(name, **kwargs)


def equivariance_error(model, x, group_name, elements=None):
    """Max over the given elements of max|f(g x) - g f(x)| / max|g f(x)|."""
    group = get_group(group_name)
    elements = range(group.order) if elements is None else elements
    with torch.no_grad():
        y = model(x)
        errs = []
        for g in elements:
            lhs, rhs = model(transform_field(x, group, g)), transform_field(y, group, g)
            errs.append(float((lhs - rhs).abs().max() / rhs.abs().max()))
    return max(errs)

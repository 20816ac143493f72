"""Relaxed-Equivariance Explorer: the science library (torch + numpy + xarray, no dashboard)."""
from .errors import SpecError
from .groups import get_group, transform_field, transform_scalar
from .models import MODEL_NAMES, build_model, models_for_group

__version__ = "0.1.0"
__all__ = ["SpecError", "get_group", "transform_field", "transform_scalar", "MODEL_NAMES",
           "build_model", "models_for_group", "__version__"]

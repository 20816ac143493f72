"""A stand-in for the project folder in tests: what a user has after `make data`, small and fast.

Shipped runs record their datasets as ``data/NAME.nc`` relative to the working folder (then the
project root). A test that relied on the project's own data folder passed where `make data` had
run and failed on a clean clone, so tests that show shipped runs get this folder instead:
small generated datasets under those names, and a copy of the shipped runs without any
evaluation artifacts that a developer's checkout may hold. Run the code under test with this
folder as its working folder.
"""
import shutil
from pathlib import Path

from core.datasets import generate, save_dataset

ROOT = Path(__file__).resolve().parents[1]
# the shipped runs' datasets at their 64 x 64 grid, with the fewest simulations a scenario takes
SHIPPED_DATASETS = (("rotation", 8), ("translation", 4))


def shipped_workspace(folder: Path) -> Path:
    """Fill ``folder`` as a project folder (``data/`` with the shipped runs' datasets and a copy
    of ``data/pretrained``); returns its data folder."""
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for scenario, sims in SHIPPED_DATASETS:
        save_dataset(generate(scenario, grid=64, steps=80, sims=sims, device="cpu"),
                     data / f"{scenario}.nc")
    shutil.copytree(ROOT / "data" / "pretrained", data / "pretrained",
                    ignore=shutil.ignore_patterns("evaluation"))
    return data

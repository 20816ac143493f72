"""The conda environment and pyproject.toml list the same runtime dependencies."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
NOT_RUNTIME = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            if name not in NOT_RUNTIME:
                conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == wanted
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[test]" in pip_section


def test_ci_pins_the_cpu_torch_wheel():
    pins = (ROOT / ".ci" / "constraints.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", pins, re.M)
    assert ".ci/constraints.txt" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_core_imports_without_dashboard_packages():
    """core/ must run where panel/holoviews/bokeh are absent (e.g. a GPU box)."""
    import subprocess
    import sys
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in {'panel', 'holoviews', 'bokeh', 'param'}:\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import core, core.models, core.nn, core.groups, core.bench, core.__main__\n"
            "core.build_model('rgroup', group='C4', in_frames=1, hidden_dim=4, num_layers=2, grid=(8, 8))\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement in a file, lazy ones included."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            out.append((module, [alias.name for alias in node.names]))
    return out


def test_core_never_imports_the_dashboard():
    offenders = [(str(p.relative_to(ROOT)), module) for p in (ROOT / "core").rglob("*.py")
                 for module, _ in _imports(p)
                 if module.split(".")[0] in {"dashboard", "panel", "holoviews", "bokeh"}]
    assert offenders == []


def test_dashboard_uses_only_public_core_names():
    offenders = []
    for path in (ROOT / "dashboard").rglob("*.py"):
        for module, names in _imports(path):
            if module.startswith("core"):
                private = [n for n in names if n.startswith("_")]
                private += [part for part in module.split(".") if part.startswith("_")]
                if private:
                    offenders.append((str(path.relative_to(ROOT)), module, private))
    assert offenders == []

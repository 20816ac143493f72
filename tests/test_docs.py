"""Docs check: every CLI subcommand's --help runs, README blocks marked runnable run, notebooks
are stored without outputs."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_cli_has_the_documented_commands():
    assert set(_subcommands()) >= {"bench", "generate", "import-pt", "info", "train", "evaluate",
                                   "runs", "sweep", "pretrain", "execute"}


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_runs(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out


def _runnable_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- runnable -->\s*```python\n(.*?)```", text, flags=re.S)


def test_readme_marks_runnable_blocks():
    assert len(_runnable_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_runnable_blocks())))
def test_readme_runnable_blocks_run(index, tmp_path):
    code = _runnable_blocks()[index]
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=300)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name

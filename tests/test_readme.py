"""The README's quickstart and shell examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

from neuronwidgets.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 2, "the README has lost its python examples"
    namespace: dict = {}
    for block in blocks:  # later blocks build on the names of earlier ones, as a reader would run them
        exec(compile(block, "README.md", "exec"), namespace)


def test_demo_shell_commands_run(capsys):
    assert main([]) == 0
    assert "ablation ranking of 64 units in layer 'relu3'" in capsys.readouterr().out
    assert main(["layers"]) == 0
    assert "relu2" in capsys.readouterr().out
    assert main(["rank", "--layer", "relu2", "--method", "taylor", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("rank,unit,score\n1,")

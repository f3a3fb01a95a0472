"""The README's quickstart and shell examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

from neuronwidgets.cli import main

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no python quickstart"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_demo_shell_commands_run(capsys):
    assert main([]) == 0
    assert "ablation ranking of 64 units in layer 'relu3'" in capsys.readouterr().out
    assert main(["layers"]) == 0
    assert "relu2" in capsys.readouterr().out
    assert main(["rank", "--layer", "relu2", "--method", "taylor", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("rank,unit,score\n1,")

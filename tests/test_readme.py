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


def test_the_table_says_what_a_score_is_and_breaks_ties(capsys):
    """Equal accuracy drops (steps of one image) read as what they are: percentage points, ordered by the loss."""
    assert main(["rank", "--top", "64"]) == 0
    out = capsys.readouterr().out
    assert "in percentage points (one image is " in out
    assert "equal scores are ordered by the loss increase" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("rank "))
    assert header.split() == ["rank", "unit", "accuracy", "drop", "(pp)", "loss", "increase"]
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+\d+\s", line)]
    assert len(rows) == 64
    drops = [float(r[2]) for r in rows]
    losses = [float(r[3]) for r in rows]
    assert drops == sorted(drops, reverse=True)
    for (d1, l1), (d2, l2) in zip(zip(drops, losses), zip(drops[1:], losses[1:])):
        assert d1 > d2 or l1 >= l2  # within a tie, the larger loss increase ranks first
    assert max(drops) < 100 and any(d >= 0.1 for d in drops)  # percentage points, not fractions

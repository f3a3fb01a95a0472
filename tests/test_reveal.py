"""nw.Reveal: an answer runs only when asked for, once."""

from __future__ import annotations

import pytest

import neuronwidgets as nw


def test_the_answer_runs_only_when_revealed_and_only_once():
    calls = []
    reveal = nw.Reveal(lambda: calls.append("shown"))
    assert calls == [] and not reveal.revealed
    assert reveal.button.description == "Show the answer" and not reveal.button.disabled
    reveal.button.click()  # what a click in the browser does
    assert calls == ["shown"] and reveal.revealed
    assert reveal.button.disabled and reveal.button.description == "Answer"
    reveal.reveal()
    reveal.button.click()
    assert calls == ["shown"]
    assert reveal.children == (reveal.button, reveal.output)


def test_reveal_needs_a_function():
    with pytest.raises(TypeError, match="Reveal needs a function that shows the answer, got str"):
        nw.Reveal("the answer is 42")

"""Reveal: an answer shown only when asked for, so that a notebook run top to bottom gives nothing away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets
from IPython.display import display


class Reveal(ipywidgets.VBox):
    """A button; clicking it runs ``answer()`` once and shows what it prints or returns below the button.

    Built from ipywidgets' own Button and Output, so it works wherever they do (JupyterLab, Notebook 7,
    VS Code, Colab). Until the click, nothing of the answer is computed or shown: running every cell, or
    reading the saved notebook, reveals no answer. ``reveal()`` does what the click does.
    """

    def __init__(self, answer: Callable[[], Any], label: str = "Show the answer") -> None:
        if not callable(answer):
            raise TypeError(f"Reveal needs a function that shows the answer, got {type(answer).__name__}")
        self._answer = answer
        self.button = ipywidgets.Button(
            description=label,
            icon="eye",
            tooltip="Predict first, then look",
            layout=ipywidgets.Layout(width="max-content"),
        )
        self.output = ipywidgets.Output()
        self.button.on_click(lambda _button: self.reveal())
        super().__init__([self.button, self.output])

    @property
    def revealed(self) -> bool:
        return self.button.disabled

    def reveal(self) -> None:
        """Run the answer into the output area (once; later calls do nothing)."""
        if self.revealed:
            return
        self.button.disabled = True
        self.button.description = "Answer"
        with self.output:
            result = self._answer()
            if result is not None:
                display(result)

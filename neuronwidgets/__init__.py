"""neuronwidgets: find which neurons of a CNN matter, and why, from a script or a notebook.

The core (`Probe`, `Ranking`, the engine and the methods) never imports ipywidgets.
"""

from importlib import metadata as _metadata

from neuronwidgets import datasets, demo
from neuronwidgets.attributes import attribute_correlations
from neuronwidgets.components import Components
from neuronwidgets.curves import Curves, completeness, faithfulness
from neuronwidgets.diagnostics import RankingWarning
from neuronwidgets.display import Unnormalize
from neuronwidgets.dissection import Dissection
from neuronwidgets.engine.progress import Cancelled, ProgressInfo
from neuronwidgets.evaluation import Evaluation
from neuronwidgets.methods import methods
from neuronwidgets.monitor import Monitor, compare_models
from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking, compare
from neuronwidgets.runlog import RunLog, compare_runs

__all__ = [
    "Cancelled",
    "Components",
    "Curves",
    "Dissection",
    "Evaluation",
    "Monitor",
    "Probe",
    "ProgressInfo",
    "Ranking",
    "RankingWarning",
    "RunLog",
    "Unnormalize",
    "attribute_correlations",
    "compare",
    "compare_models",
    "compare_runs",
    "completeness",
    "datasets",
    "demo",
    "faithfulness",
    "methods",
]
# One source for the version: pyproject.toml, as installed (an editable install reads it the same way).
__version__ = _metadata.version("neuronwidgets")

_WIDGETS = ("Explorer", "RankedList", "ActivationOverlay", "AblationPanel", "MonitorView", "Reveal")


def __getattr__(name: str):
    """The widgets load ipywidgets and anywidget, so they are imported on first use only."""
    if name in _WIDGETS:
        from neuronwidgets import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'neuronwidgets' has no attribute {name!r}")

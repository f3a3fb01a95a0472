"""The Jupyter widgets (anywidget); importing this module imports ipywidgets, the core never does."""

from neuronwidgets.widgets.ablation_panel import AblationPanel
from neuronwidgets.widgets.activation_overlay import ActivationOverlay
from neuronwidgets.widgets.explorer import Explorer
from neuronwidgets.widgets.monitor import MonitorView
from neuronwidgets.widgets.ranked_list import RankedList
from neuronwidgets.widgets.reveal import Reveal

__all__ = ["AblationPanel", "ActivationOverlay", "Explorer", "MonitorView", "RankedList", "Reveal"]

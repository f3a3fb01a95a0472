"""Two small, fully offline demos, each a CNN with its held-out data.

``load()`` (or ``load("digits")``) returns the pretrained :class:`DigitsCNN` (about 25k parameters, >95% test
accuracy) and the 360 held-out test digits, upsampled to 1x32x32, as a :class:`DigitsDataset`. Weights and test
images ship inside the package, so the demo needs neither a download nor scikit-learn;
``python -m neuronwidgets.demo.train`` regenerates both (that script does need scikit-learn).

``load("shapes")`` returns the pretrained :class:`ShapesCNN` (about 15k parameters, 100% on the 1000 held-out
images) and those images, ``nw.datasets.shapes(1000, seed=0)``: generated, with every concept's mask, for
`Probe.dissect`. Only its weights ship; ``python -m neuronwidgets.demo.train_shapes`` regenerates them.
"""

from __future__ import annotations

import torch
from torch import nn

from neuronwidgets.datasets.shapes import ShapesDataset, shapes

from .data import CLASSES, TEST_SPLIT_PATH, DigitsDataset
from .model import WEIGHTS_PATH, DigitsCNN
from .shapes_model import HELD_OUT_IMAGES, HELD_OUT_SEED, SHAPES_WEIGHTS_PATH, ShapesCNN

__all__ = ["CLASSES", "DEMOS", "DigitsCNN", "DigitsDataset", "ShapesCNN", "load"]

DEMOS = ("digits", "shapes")


def load(
    name: str = "digits", device: torch.device | str | None = None
) -> tuple[DigitsCNN, DigitsDataset] | tuple[ShapesCNN, ShapesDataset]:
    """Return demo ``name``'s pretrained model (in eval mode, on ``device`` if given) and its held-out data.

    ``"digits"`` (the default): the digits CNN and its 360 test digits. ``"shapes"``: the shapes CNN and 1000
    generated held-out shapes. The dataset stays on the CPU; move its images yourself if needed.
    """
    if name not in DEMOS:
        raise ValueError(
            f"unknown demo {name!r}; valid demos: {', '.join(map(repr, DEMOS))} (a device goes in device=...)"
        )
    model: nn.Module
    if name == "digits":
        model, path = DigitsCNN(), WEIGHTS_PATH
    else:
        model, path = ShapesCNN(), SHAPES_WEIGHTS_PATH
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    model.eval()
    if device is not None:
        model.to(device)
    if name == "digits":
        return model, DigitsDataset.from_npz(TEST_SPLIT_PATH)
    return model, shapes(HELD_OUT_IMAGES, seed=HELD_OUT_SEED)

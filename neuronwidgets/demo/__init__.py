"""A tiny, fully offline demo: a small CNN trained on scikit-learn's 8x8 digits.

``load()`` returns the pretrained :class:`DigitsCNN` (about 25k parameters, >95% test
accuracy) and the 360 held-out test digits, upsampled to 1x32x32, as a
:class:`DigitsDataset`. Weights and test images ship inside the package, so the demo
needs neither a download nor scikit-learn; ``python -m neuronwidgets.demo.train``
regenerates both (that script does need scikit-learn).
"""

from __future__ import annotations

import torch

from .data import CLASSES, TEST_SPLIT_PATH, DigitsDataset
from .model import WEIGHTS_PATH, DigitsCNN

__all__ = ["CLASSES", "DigitsCNN", "DigitsDataset", "load"]


def load(device: torch.device | str | None = None) -> tuple[DigitsCNN, DigitsDataset]:
    """Return the pretrained demo model (in eval mode, on ``device`` if given) and the test split.

    The dataset stays on the CPU; move ``dataset.images`` yourself if needed.
    """
    model = DigitsCNN()
    model.load_state_dict(torch.load(WEIGHTS_PATH, weights_only=True, map_location="cpu"))
    model.eval()
    if device is not None:
        model.to(device)
    return model, DigitsDataset.from_npz(TEST_SPLIT_PATH)

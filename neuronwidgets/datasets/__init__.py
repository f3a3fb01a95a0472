"""Generated datasets with known ground truth, for checking what a unit detects against the truth."""

from neuronwidgets.datasets.shapes import COLOURS, SHAPES, TEXTURES, ShapesDataset, shapes

__all__ = ["COLOURS", "SHAPES", "TEXTURES", "ShapesDataset", "shapes"]

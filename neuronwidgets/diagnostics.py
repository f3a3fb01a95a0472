"""Say when a ranking cannot mean much: the model is at chance on these labels, or every unit scored the same.

Both happen quietly at real size (a 1,000-class model with labels that are not its class indices scores 0.0000
everywhere), so `Probe.rank` puts these notes in ``Ranking.meta["warnings"]`` and issues them as
`RankingWarning`; the widgets show them beside the list.
"""

from __future__ import annotations

import numpy as np

from neuronwidgets.ranking import Ranking


class RankingWarning(UserWarning):
    """A ranking was computed, but something about the model or data makes it unreliable."""


def chance_accuracy(class_images: np.ndarray | None, num_classes: int) -> float:
    """The accuracy of always guessing the most frequent label (1/classes when the counts are unknown)."""
    if class_images is None or np.sum(class_images) == 0:
        return 1.0 / num_classes
    return float(np.max(class_images) / np.sum(class_images))


def ranking_warnings(ranking: Ranking, num_classes: int) -> list[str]:
    """Why ``ranking`` may not be worth reading; empty when nothing is wrong."""
    notes = []
    accuracy = ranking.meta.get("base_accuracy")
    if accuracy is not None:
        chance = chance_accuracy(ranking.meta.get("class_images"), num_classes)
        if accuracy <= chance:
            notes.append(
                f"the model's accuracy on these labels is {accuracy:.1%}, at or below chance ({chance:.1%}, always "
                "guessing the most frequent label): the labels may not be the model's class indices (check the "
                "dataset's class order against the model's outputs), or the model is untrained"
            )
    scores = np.asarray(ranking.scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    if len(scores) > 1 and (len(finite) == 0 or np.ptp(finite) == 0):
        value = f"{finite[0]:.4g}" if len(finite) else "NaN"
        notes.append(
            f"every unit scored {value}: this ranking gives no order (its order is the unit index). "
            + _why_all_equal(ranking.method)
        )
    return notes


def _why_all_equal(method: str) -> str:
    if method in ("ablation", "car"):
        return "No single unit changes any prediction on these images: try more images, mode='mean', or 'taylor'."
    if method.startswith("resampling"):
        return "The output does not vary across the noisy copies: try output='logit' or a larger sigma."
    return "The layer's units may be dead or constant on these images."

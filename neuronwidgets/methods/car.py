"""CAR, classification accuracy reduction (Abbasi-Asl & Yu 2017): greedy pruning of the least harmful units."""

from __future__ import annotations

import numpy as np

from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking


def _accuracy(counts, target: int | None) -> np.ndarray:
    return counts.accuracy if target is None else counts.class_accuracy[:, target]


def rank(
    site: Site,
    *,
    target: int | None = None,
    prune: int | None = None,
    per_step: int = 1,
    floor: float | None = None,
    mode: str = "zero",
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Ranking:
    """Greedy CAR: prune the unit whose removal costs least accuracy, recompute, repeat; last pruned = most important.

    Each round evaluates ``CAR(i | S) = acc(without S) - acc(without S and i)`` for every unit i still in the
    layer and prunes the ``per_step`` smallest (ties: the smaller loss increase first). It stops after
    ``prune`` units (default: all but one), or before accuracy would fall below ``floor``. With ``target``
    the accuracy is that of class ``target``'s images. Scores are positions in the reversed pruning order,
    scaled to [0, 1]; units left unpruned rank above all pruned ones, by their last CAR index.
    ``meta`` has the pruning order, the accuracy after each round, one-shot CAR (``CAR(i | {})``) and
    class-wise CAR (each unit's most and least dependent classes) from the first round. No fine-tuning.
    Cost: about ``prune x units x images`` re-runs of the network after the layer.
    """
    units = site.units
    if units < 2:
        raise ValueError(
            f"car has nothing to prune: layer {site.layer!r} has {units} unit, and greedy pruning needs at least "
            "2 (it keeps one); rank a layer with more units, or use 'ablation'"
        )
    if prune is not None and (isinstance(prune, bool) or not isinstance(prune, (int, np.integer))):
        raise TypeError(f"prune must be an int or None, got {prune!r}")
    if isinstance(per_step, bool) or not isinstance(per_step, (int, np.integer)):
        raise TypeError(f"per_step must be an int, got {per_step!r}")
    prune = units - 1 if prune is None else int(prune)
    if not 1 <= prune <= units - 1:
        raise ValueError(f"prune must be between 1 and {units - 1} (the layer has {units} units), got {prune}")
    if per_step < 1:
        raise ValueError(f"per_step must be at least 1, got {per_step}")
    rounds, remaining = [], units
    while sum(rounds) < prune:
        rounds.append(min(per_step, prune - sum(rounds)))
    total_steps = 0
    for size in rounds:
        total_steps += remaining * site.chunks_read()
        remaining -= size
    pruned: list[int] = []
    accuracy_curve: list[float] = []
    car_at_removal: list[float] = []
    last_car = np.zeros(units)
    with Progress("greedy CAR", total_steps, progress, cancel) as bar:
        for round_index, size in enumerate(rounds):
            candidates = [u for u in range(units) if u not in set(pruned)]
            before, after = site.ablation_outcomes(candidates, mode=mode, base=pruned, progress=bar, cancel=cancel)
            base_accuracy = float(_accuracy(before, target)[0])
            if round_index == 0:
                site.require_class(target, before.images)
                if floor is not None and floor > base_accuracy:
                    raise ValueError(
                        f"floor={floor} is above the model's accuracy {base_accuracy:.4f}: nothing can be pruned"
                    )
                accuracy_curve.append(base_accuracy)
                first_before, first_after = before, after
            car = base_accuracy - _accuracy(after, target)
            loss_increase = after.mean_loss - before.mean_loss[0]
            chosen = np.lexsort((loss_increase, car))[:size]
            last_car[candidates] = car
            new_accuracy = float(_accuracy(after, target)[chosen[0]]) if size == 1 else None
            if size > 1:
                removed = pruned + [candidates[i] for i in chosen]
                together, _ = site.ablation_outcomes([], mode=mode, base=removed, progress=False, cancel=cancel)
                new_accuracy = float(_accuracy(together, target)[0])
            if floor is not None and new_accuracy < floor:
                break
            pruned += [candidates[i] for i in chosen]
            car_at_removal += [float(car[i]) for i in chosen]
            accuracy_curve.append(new_accuracy)
    left = [u for u in range(units) if u not in set(pruned)]
    order = pruned + sorted(left, key=lambda u: last_car[u])  # least important first
    scores = np.empty(units)
    scores[order] = np.arange(units) / max(1, units - 1)
    class_car = first_before.class_accuracy[0] - first_after.class_accuracy
    most = np.argsort(-np.nan_to_num(class_car, nan=-np.inf), axis=1, kind="stable")[:, :3]
    least = np.argsort(np.nan_to_num(class_car, nan=np.inf), axis=1, kind="stable")[:, :3]
    return Ranking(
        scores=scores,
        method="car",
        layer=site.layer,
        target=target,
        meta={
            "mode": mode,
            **site.ablator().describe(),
            "pruning_order": pruned,
            "car_at_removal": car_at_removal,
            "accuracy_curve": accuracy_curve,
            "per_step": per_step,
            "stopped_by_floor": len(pruned) < prune,
            "base_accuracy": float(first_before.accuracy[0]),
            "class_images": first_before.images,
            "one_shot": first_before.accuracy[0] - first_after.accuracy,
            "class_car": class_car,
            "most_dependent_classes": most,
            "least_dependent_classes": least,
        },
    )

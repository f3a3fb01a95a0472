"""First-order Taylor importance (Molchanov et al. 2017): a one-pass estimate of the loss change on removal."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neuronwidgets.engine.hooks import forward_hooks, gradient_leaf
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking


def rank(site: Site, *, progress: ProgressOption = None, cancel: CancelFlag = None) -> Ranking:
    """|mean over images and positions of activation x d(loss)/d(activation)|, normalised to unit L2 norm.

    Zeroing unit c changes the loss by about ``-sum A_c * dL/dA_c`` (first order), so this is a fast
    preview of ablation: one forward and backward pass per chunk. The loss is the cross-entropy with the
    true labels. Gradients are taken with respect to the activation only: the parameters' ``.grad`` are
    never touched. The layers before the site run without autograd (the graph is switched on at the site),
    so the memory held per chunk is that of the network's tail, not of the whole model.
    """
    module = site.module
    total: torch.Tensor | None = None
    count = 0
    correct = 0
    class_images = torch.zeros(site.num_classes, dtype=torch.int64)
    held: list[torch.Tensor] = []

    def per_image(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores (N, classes) and, per image and unit, activation x gradient summed over positions."""
        held.clear()
        try:
            with forward_hooks([(module, gradient_leaf(held))]):
                scores = site.model(images)
            loss = F.cross_entropy(scores, labels, reduction="sum")  # a sum: each image's gradient is its own
        finally:
            torch.set_grad_enabled(False)
        (grad,) = torch.autograd.grad(loss, held)
        product = (held[0].detach() * grad).double()
        return scores.detach(), product.reshape(product.shape[0], product.shape[1], -1).sum(2)

    with site.running(grad=False):
        for chunk, bar in site.chunks(f"taylor {site.layer}", progress, cancel, merged=True):
            assert chunk.labels is not None
            scores, sums = site.sliced("taylor", per_image, chunk.images, chunk.labels, bar=bar)
            correct += int((scores.argmax(1) == chunk.labels).sum())
            class_images += torch.bincount(chunk.labels.cpu(), minlength=site.num_classes)
            total = sums.sum(0) if total is None else total + sums.sum(0)
            count += held[0][0, 0].numel() * len(chunk.labels)  # positions per image x images
            bar.advance()
    assert total is not None
    if site.group is not None:  # sums over every rank's shard
        summed, counted, per_class = site.group.sum(
            "taylor", total.cpu().numpy(), np.array([count, correct]), class_images.numpy()
        )
        total, (count, correct), class_images = torch.from_numpy(summed), counted.tolist(), torch.from_numpy(per_class)
    raw = (total / count).abs()
    norm = raw.norm()
    scores = raw / norm if norm > 0 else raw
    meta = {
        "raw": raw.cpu().numpy(),
        "base_accuracy": correct / max(1, int(class_images.sum())),
        "class_images": class_images.numpy(),
    }
    return Ranking(scores=scores.cpu().numpy(), method="taylor", layer=site.layer, meta=meta)

"""First-order Taylor importance (Molchanov et al. 2017): a one-pass estimate of the loss change on removal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from neuronwidgets.engine.guard import evaluating
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.ranking import Ranking

if TYPE_CHECKING:
    from neuronwidgets.probe import Probe


def rank(probe: Probe, *, progress: ProgressOption = None, cancel: CancelFlag = None) -> Ranking:
    """|mean over images and positions of activation x d(loss)/d(activation)|, normalised to unit L2 norm.

    Zeroing unit c changes the loss by about ``-sum A_c * dL/dA_c`` (first order), so this is a fast
    preview of ablation: one forward and backward pass per chunk. The loss is the cross-entropy with the
    true labels. Gradients are taken with respect to the activation only: the parameters' ``.grad`` are
    never touched.
    """
    probe.require_labels("taylor")
    module = probe.module
    total: torch.Tensor | None = None
    count = 0
    held: list[torch.Tensor] = []

    def hold(mod: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        held.append(leaf)
        return leaf.clone()  # later in-place ops change the clone, not the leaf we differentiate

    with evaluating(probe.model), torch.enable_grad():
        for chunk, bar in probe.chunks(f"taylor {probe.layer}", progress, cancel):
            held.clear()
            handle = module.register_forward_hook(hold)
            try:
                scores = probe.model(chunk.images)
            finally:
                handle.remove()
            loss = F.cross_entropy(scores, chunk.labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, held)
            product = (held[0].detach() * grad).double()
            per_unit = product.transpose(0, 1).reshape(product.shape[1], -1).sum(1)
            total = per_unit if total is None else total + per_unit
            count += product[:, 0].numel()
            bar.advance()
    assert total is not None
    raw = (total / count).abs()
    norm = raw.norm()
    scores = raw / norm if norm > 0 else raw
    return Ranking(scores=scores.cpu().numpy(), method="taylor", layer=probe.layer, meta={"raw": raw.cpu().numpy()})

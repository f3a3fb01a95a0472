"""The model is sacred: weights, buffers, train/eval flags, hooks, grads and device are exactly as before,
after every call, after an error raised midway and after a KeyboardInterrupt."""

from __future__ import annotations

import hashlib
import threading

import pytest
import torch

import neuronwidgets as nw
from tests.conftest import build, make_data


def fingerprint(model: torch.nn.Module) -> dict:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict(keep_vars=True).items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    hook_counts = [
        len(getattr(m, attr))
        for m in model.modules()
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        )
    ]
    return {
        "state": digest.hexdigest(),
        "flags": [m.training for m in model.modules()],
        "hooks": hook_counts,
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "devices": {t.device for t in model.state_dict().values()},
        "param_ids": [id(p) for p in model.parameters()],
        "global_hooks": len(torch.nn.modules.module._global_forward_hooks),
    }


def assert_same(before: dict, after: dict) -> None:
    grads_b, grads_a = before.pop("grads"), after.pop("grads")
    assert before == after
    for gb, ga in zip(grads_b, grads_a):
        assert (gb is None and ga is None) or torch.equal(gb, ga)


@pytest.fixture(params=["plain", "residual", "untraceable"])
def training_model(request):
    """A model in train mode with one frozen eval-mode BatchNorm and existing gradients, as mid-training."""
    model, shape = build(request.param)
    images, labels = make_data(model, 11, shape, seed=2)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            break
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    return model, images, labels


CALLS = [
    lambda p: p.rank("ablation", progress=False),
    lambda p: p.rank("ablation", mode="mean", progress=False),
    lambda p: p.rank("ablation", top=1, tolerance=0.1, progress=False),
    lambda p: p.rank("ablation", fraction=0.5, progress=False),
    lambda p: p.rank("taylor", progress=False),
    lambda p: p.rank("selectivity", progress=False),
    lambda p: p.rank("activation", progress=False),
    lambda p: p.evaluate([0, 1]),
    lambda p: p.activation_maps(0, [0, 1]),
    lambda p: p.top_images(1, k=3),
    lambda p: p.top_images(1, k=3, by="contribution", target=0, progress=False),
    lambda p: p.contribution_maps(0, [0, 1], target=None),
    lambda p: p.visualize(0, steps=2, progress=False),
]


def test_every_call_leaves_the_model_untouched(training_model):
    model, images, labels = training_model
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels), chunk_size=4)
    for layer in probe.layers:
        probe.layer = layer
        for call in CALLS:
            call(probe)
    assert_same(before, fingerprint(model))


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize(
    ("method", "options"),
    [("ablation", {}), ("ablation", {"top": 1}), ("taylor", {}), ("selectivity", {})],
)
def test_an_exception_midway_leaves_the_model_untouched(training_model, exception, method, options):
    model, images, labels = training_model
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels), chunk_size=3)
    probe.layer = probe.layers[1]

    def explode(info):
        if info.done >= 2:
            raise exception("stop")

    with pytest.raises(exception):
        probe.rank(method, progress=explode, **options)
    assert_same(before, fingerprint(model))


def test_cancellation_raises_cancelled_and_leaves_the_model_untouched(training_model):
    model, images, labels = training_model
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels), chunk_size=2)
    stop = threading.Event()

    def cancel_after_first(info):
        stop.set()

    with pytest.raises(nw.Cancelled, match=r"cancelled after \d+ of \d+ steps"):
        probe.rank("ablation", progress=cancel_after_first, cancel=stop)
    stop.clear()
    assert probe.rank("ablation", progress=False, cancel=stop).units == probe.units
    assert_same(before, fingerprint(model))


def test_interrupt_inside_the_model_forward_removes_the_capture_hooks():
    model, shape = build("plain")
    images, labels = make_data(model, 6, shape, seed=3)
    probe = nw.Probe(model, (images, labels), layer="relu2", chunk_size=2)
    before = fingerprint(model)
    calls = {"n": 0}

    def interrupt(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    handle = model.conv1.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        probe.rank("taylor", progress=False)
    handle.remove()
    assert_same(before, fingerprint(model))


def test_two_threads_on_one_model_run_one_after_the_other(training_model):
    """A widget's worker thread and a notebook cell may rank the same model at once; the per-model lock
    keeps each one's eval mode and hooks from leaking into the other."""
    model, images, labels = training_model
    before = fingerprint(model)
    probes = [nw.Probe(model, (images, labels), chunk_size=3) for _ in range(2)]
    errors = []

    def work(probe):
        try:
            for _ in range(3):
                probe.rank("taylor", progress=False)
                probe.rank("ablation", progress=False)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(p,)) for p in probes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_same(before, fingerprint(model))

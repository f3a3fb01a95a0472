"""The ablation engine against the naive loop (a plain hook and the full model per unit)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.engine import ablate, slicing
from tests import reference
from tests.conftest import build, make_data

EXPECTED_PATHS = {
    ("plain", "conv1"): "pushdown",  # bn, in-place relu and max pooling, then a conv
    ("plain", "relu2"): "pushdown",  # then a grouped conv
    ("plain", "conv3"): "pushdown",  # relu, avg pool, flatten into fc1 (a linear layer that is not the output)
    ("plain", "fc1"): "closed_form",  # relu and dropout, then the classifier
    ("residual", "stem_relu"): "suffix",  # its output also feeds the skip addition
    ("residual", "block2.conv1"): "pushdown",
    ("residual", "block1"): "suffix",
    ("untraceable", "relu"): "hook",
    ("inplace", "conv"): "suffix",  # x.relu_() changes the layer's output in place while conv2 reads it
}


class BatchCentred(nn.Module):
    """Subtracts the batch mean after the layer: the network after ``relu`` scores an image differently in
    another batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        return self.fc((x - x.mean(0, keepdim=True)).mean((2, 3)))


class NeighbourMixing(BatchCentred):
    """Adds half of the image before's features after ``relu`` (the first image has none before it): scores
    that depend on the batch, though not through its mean, and not the first image's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x)).mean((2, 3))
        mixed = x.clone()
        mixed[1:] += 0.5 * x[:-1]
        return self.fc(mixed)


def engine_scores(probe: nw.Probe, mode: str, units: list[int] | None = None) -> torch.Tensor:
    """(units, N, classes) class scores from the engine, one unit ablated at a time."""
    ablator = probe.site().ablator()
    fill = probe.site().fill(mode)
    units = list(range(probe.units)) if units is None else units
    parts = []
    with torch.no_grad():
        for values, chunk, _bar in probe.site().crossings("test", progress=False):
            part = torch.full((len(units), len(chunk.images), probe.num_classes), torch.nan, dtype=values[0].dtype)
            for block, images, scores in ablator.each_unit(values, units, fill):
                part[[units.index(u) for u in block], images] = scores
            parts.append(part)
    out = torch.cat(parts, dim=1)
    assert not out.isnan().any(), "the engine left some (unit, image) pairs without scores"
    return out


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_every_layer_matches_the_naive_loop(small_model, mode):
    name, model, images, labels = small_model
    probe = nw.Probe(model, (images, labels), chunk_size=10)
    paths = set()
    for layer in probe.layers:
        probe.layer = layer
        _, expected = reference.ablation_table(model, layer, images, labels, mode)
        got = engine_scores(probe, mode)
        paths.add(probe.site().ablator().path)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9, msg=f"{name} {layer} {mode}")
        if (name, layer) in EXPECTED_PATHS:
            assert probe.site().ablator().path == EXPECTED_PATHS[(name, layer)], (layer, probe.site().ablator().reason)
    expected_paths = {
        "plain": {"pushdown", "closed_form"},
        "residual": {"pushdown", "closed_form", "suffix"},
        "inplace": {"suffix"},
        "untraceable": {"hook"},
    }
    assert paths == expected_paths[name]


def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the unit loop slice even the tiny chunks of the test models."""
    monkeypatch.setattr(ablate, "_MIN_WORK_BYTES", 1)
    monkeypatch.setattr(ablate, "_MIN_CALL_FLOPS", 1)


def test_slicing_the_images_of_a_chunk_changes_nothing(small_model, monkeypatch):
    """With a tiny work budget the unit loop takes each chunk's images in slices; the scores stay exact."""
    small_slices(monkeypatch)
    _, model, images, labels = small_model
    probe = nw.Probe(model, (images, labels), chunk_size=12)
    sliced = set()
    for layer in probe.layers:
        probe.layer = layer
        _, expected = reference.ablation_table(model, layer, images, labels, "zero")
        torch.testing.assert_close(engine_scores(probe, "zero"), expected, rtol=1e-9, atol=1e-9, msg=f"{layer}")
        values = next(probe.site().crossings("test", progress=False))[0]
        sliced.add(len(probe.site().ablator().work_slices(values)) > 1)
        assert probe.site().ablator().images_independent
    assert True in sliced


def test_the_unit_loop_stays_whole_where_the_network_mixes_images(monkeypatch):
    """A suffix that subtracts the batch mean scores an image differently in a slice: the engine notices
    once, keeps whole chunks and says why, and still matches the naive loop."""
    small_slices(monkeypatch)

    torch.manual_seed(0)
    model = BatchCentred().double().eval()
    images, labels = make_data(model, 16, (2, 8, 8), seed=3)
    probe = nw.Probe(model, (images, labels), layer="relu", chunk_size=16)
    _, expected = reference.ablation_table(model, "relu", images, labels, "zero")
    torch.testing.assert_close(engine_scores(probe, "zero"), expected, rtol=1e-9, atol=1e-9)
    ablator = probe.site().ablator()
    assert not ablator.images_independent and "not score images independently" in ablator.reason
    ranking = probe.rank("ablation", progress=False)
    assert "not score images independently" in ranking.meta["engine_note"]


def test_small_work_takes_the_hook_path_with_units_stacked_and_stays_exact(monkeypatch):
    """Where tracing would cost more than it could save (here: a second per module), the engine re-runs the
    whole model with a hook, several units' ablations stacked along the batch into one call, says so, and
    still matches the naive loop; with cheap tracing the same layer is traced."""
    model, shape = build("plain", seed=2)
    images, labels = make_data(model, 12, shape, seed=4)
    base, expected = reference.ablation_table(model, "relu2", images, labels, "zero")
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1.0)
    probe = nw.Probe(model, (images, labels), layer="relu2")
    ablator = probe.site().ablator()
    assert ablator.path == "hook" and ablator.reason.startswith("small work: the whole model per unit takes")
    crossing = ablator.crossing(images)
    assert ablator.units_per_call(crossing, ablator.work_budget(crossing)) > 1
    torch.testing.assert_close(engine_scores(probe, "zero"), expected, rtol=1e-9, atol=1e-9)
    ranking = probe.rank("ablation", progress=False)
    drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in expected]
    np.testing.assert_allclose(ranking.scores, drops, atol=1e-12)
    assert ranking.meta["engine"] == "hook" and ranking.meta["engine_note"].startswith("small work")
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1e-12)
    assert nw.Probe(model, (images, labels), layer="relu2").site().ablator().path == "pushdown"


def test_small_work_on_a_model_that_mixes_images_runs_one_unit_per_call(monkeypatch):
    """The hook path stacks units only where the model scores images independently."""

    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1.0)
    torch.manual_seed(0)
    model = BatchCentred().double().eval()
    images, labels = make_data(model, 10, (2, 8, 8), seed=3)
    probe = nw.Probe(model, (images, labels), layer="relu")
    ablator = probe.site().ablator()
    assert ablator.path == "hook"
    crossing = ablator.crossing(images)
    assert ablator.units_per_call(crossing, ablator.work_budget(crossing)) == 1
    _, expected = reference.ablation_table(model, "relu", images, labels, "zero")
    torch.testing.assert_close(engine_scores(probe, "zero"), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("channels_last_faster", [True, False])
def test_small_work_is_one_pass_of_the_images_and_one_stacked_pass_of_every_unit(monkeypatch, channels_last_faster):
    """On the hook path a fresh probe runs the model four times: its first pass on one image, the chunk's own
    pass, the first unit's pass with the images channels-last (timed against the own pass) and one pass with
    the other units' copies stacked. The check that stacking is exact rides on the stacked pass (a copy of the
    images with no unit replaced), and the rule reads the first pass's timing. Where channels-last ran slower,
    the first unit's pass is done again in the stacked one, with the images as given."""
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1.0)
    monkeypatch.setattr(slicing, "SLICE_SECONDS", math.inf)  # the chunk's own pass in one slice, however slow
    monkeypatch.setattr(ablate, "_faster", lambda seconds, than: channels_last_faster)
    model, shape = build("plain", seed=2)
    images, labels = make_data(model, 12, shape, seed=4)
    base, expected = reference.ablation_table(model, "relu2", images, labels, "zero")
    calls: list[tuple[int, bool]] = []

    def record(module: nn.Module, args: tuple) -> None:
        calls.append((args[0].shape[0], args[0].is_contiguous(memory_format=torch.channels_last)))

    handle = model.register_forward_pre_hook(record)
    try:
        probe = nw.Probe(model, (images, labels), layer="relu2")
        ranking = probe.rank("ablation", progress=False)
    finally:
        handle.remove()
    stacked = 12 * (probe.units if channels_last_faster else probe.units + 1)
    assert calls == [(1, False), (12, False), (12, True), (stacked, channels_last_faster)]
    assert ranking.meta["engine"] == "hook" and "independently" not in ranking.meta["engine_note"]
    assert ("channels-last" in ranking.meta["engine_note"]) == channels_last_faster
    drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in expected]
    np.testing.assert_allclose(ranking.scores, drops, atol=1e-12)


class ReadsMemoryChannelsFirst(nn.Module):
    """A model whose forward assumes channels-first memory after its first conv: ``view`` fails on
    channels-last values; ``as_strided`` reads them silently wrong (as a C++ extension reading the raw data
    would)."""

    def __init__(self, read: str) -> None:
        super().__init__()
        self.read = read
        self.conv = nn.Conv2d(2, 6, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        if self.read == "view":
            return self.fc(x.view(x.shape[0], -1))
        n, c, h, w = x.shape
        return self.fc(torch.as_strided(x, (n, c * h * w), (c * h * w, 1)))


@pytest.mark.parametrize("read", ["view", "as_strided"])
def test_channels_last_is_dropped_where_the_model_reads_memory_channels_first(monkeypatch, read):
    """Channels-last images are a speed choice only: where the model fails on them, or scores them otherwise
    (found by the stacked check's copy of the images), the engine runs the images as given, and stays exact."""
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1.0)
    monkeypatch.setattr(slicing, "SLICE_SECONDS", math.inf)
    monkeypatch.setattr(ablate, "_faster", lambda seconds, than: True)
    torch.manual_seed(0)
    model = ReadsMemoryChannelsFirst(read).double().eval()
    images, labels = make_data(model, 10, (2, 8, 8), seed=5)
    ranking = nw.Probe(model, (images, labels), layer="relu").rank("ablation", mode="mean", progress=False)
    assert ranking.meta["engine"] == "hook"
    assert "channels-last, which this model ran faster" not in (ranking.meta["engine_note"] or "")
    assert ("failed channels-last" in ranking.meta["engine_note"]) == (read == "as_strided")
    assert "independently" not in ranking.meta["engine_note"]
    base, expected = reference.ablation_table(model, "relu", images, labels, "mean")
    drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in expected]
    np.testing.assert_allclose(ranking.scores, drops, atol=1e-12)
    losses = [nn.functional.cross_entropy(s, labels).item() for s in [base, *expected]]
    np.testing.assert_allclose(ranking.meta["loss_increase"], np.array(losses[1:]) - losses[0], atol=1e-12)


def test_small_work_stacks_keep_their_largest_tensor_under_the_cap(monkeypatch):
    """On the CPU a stacked call holds as many images as keep the first pass's largest tensor per image, times
    the images, under `_STACK_PEAK_BYTES` (here three copies of the 12 images), the checking call included."""
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1.0)
    monkeypatch.setattr(slicing, "SLICE_SECONDS", math.inf)
    model, shape = build("plain", seed=2)
    images, labels = make_data(model, 12, shape, seed=4)
    base, expected = reference.ablation_table(model, "relu2", images, labels, "zero")
    probe = nw.Probe(model, (images, labels), layer="relu2")
    monkeypatch.setattr(ablate, "_STACK_PEAK_BYTES", probe.site().first_pass.peak_bytes * 12 * 3)
    monkeypatch.setattr(ablate, "_faster", lambda seconds, than: True)  # the first unit's pass: channels-last
    batches: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        ranking = probe.rank("ablation", progress=False)
    finally:
        handle.remove()
    assert batches[0] == 12 and max(batches[1:]) == 36 and sum(batches[1:]) == 12 * (probe.units + 1)
    drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in expected]
    np.testing.assert_allclose(ranking.scores, drops, atol=1e-12)


@pytest.mark.parametrize("mixer", [BatchCentred, NeighbourMixing])
def test_small_work_stacking_on_a_model_that_mixes_images_fails_its_check_and_stays_exact(monkeypatch, mixer):
    """The stacked pass's copy of the images with no unit replaced differs from the chunk's own pass where the
    model mixes images, whether through the batch's mean or from one image to the next: the engine says so,
    and ablates one unit per call, as the naive loop does. With the mean map as the fill, stacking keeps a
    batch's mean, so it is exact on the batch-centred model and may pass; a zeroing ranking on the same probe
    afterwards is still checked, and exact. Channels-last is taken as the faster layout, so the failed check
    is made again with the images as given (it could have been the layout's fault), and fails again."""
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 1.0)
    monkeypatch.setattr(ablate, "_faster", lambda seconds, than: True)
    torch.manual_seed(0)
    model = mixer().double().eval()
    images, labels = make_data(model, 10, (2, 8, 8), seed=3)
    zeroing = nw.Probe(model, (images, labels), layer="relu").rank("ablation", progress=False)
    assert zeroing.meta["engine"] == "hook" and "not score images independently" in zeroing.meta["engine_note"]
    probe = nw.Probe(model, (images, labels), layer="relu")
    for mode, ranking in [("mean", probe.rank("ablation", mode="mean", progress=False)), ("zero", zeroing)]:
        base, expected = reference.ablation_table(model, "relu", images, labels, mode)
        drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in expected]
        np.testing.assert_allclose(ranking.scores, drops, atol=1e-12)
    again = probe.rank("ablation", progress=False)
    np.testing.assert_allclose(again.scores, zeroing.scores, atol=1e-12)
    assert "not score images independently" in again.meta["engine_note"]


def test_the_small_work_rule_reads_the_first_pass_and_times_a_batch_only_near_the_line(monkeypatch):
    """Given one image's timing, the rule decides at once where even that overstatement of the saving is
    below the cost of tracing (hook path), or ten times above it (traced); in between it times a batch."""
    monkeypatch.setattr(ablate, "SETUP_SECONDS_PER_MODULE", 0.01)
    model, shape = build("plain")
    setup = 0.01 * len(list(model.modules()))
    image = torch.rand(1, *shape, dtype=torch.float64) + 0.1
    batches: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        with torch.no_grad():  # 10 images, 9 units: the naive loop is 100 passes of one image
            small = ablate.small_work_reason(model, model.relu2, image, 10, 9, (1.0, setup / 1000))
            large = ablate.small_work_reason(model, model.relu2, image, 10, 9, (1.0, setup / 10))
            assert batches == []
            ablate.small_work_reason(model, model.relu2, image, 10, 9, (1.0, setup / 50))
            assert batches == [10]
    finally:
        handle.remove()
    assert small.startswith("small work: the whole model per unit takes at most 100.00 s") and large is None


def test_progress_adds_up_to_the_total_when_chunks_are_sliced(monkeypatch):
    small_slices(monkeypatch)
    model, shape = build("plain")
    images, labels = make_data(model, 21, shape, seed=2)
    probe = nw.Probe(model, (images, labels), layer="relu2", chunk_size=9)
    seen: list[nw.ProgressInfo] = []
    probe.rank("ablation", progress=seen.append)
    values = next(probe.site().crossings("test", progress=False))[0]
    assert len(probe.site().ablator().work_slices(values)) > 1
    assert seen[-1].done == seen[-1].total
    assert all(a.done <= b.done for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize(
    "name,layers",
    [
        ("resnet18", ["relu", "layer1", "layer2.0.bn1", "layer3", "layer4", "layer4.1.conv2"]),
        ("mobilenet", ["features.0", "features.1.conv.0", "features.18"]),
    ],
)
def test_torchvision_models_match_the_naive_loop(name, layers):
    model, shape = build(name, seed=3)
    images, labels = make_data(model, 6, shape, seed=4)
    probe = nw.Probe(model, (images, labels))
    for layer in layers:
        probe.layer = layer
        units = sorted(np.random.default_rng(0).permutation(probe.units)[:12].tolist())
        expected = reference.ablation_table(model, layer, images, labels, "zero", units)[1]
        torch.testing.assert_close(engine_scores(probe, "zero", units), expected, rtol=1e-8, atol=1e-8, msg=layer)
    probe.layer = "layer4" if name == "resnet18" else "features.18"
    assert probe.site().ablator().path == "closed_form"


def test_ablation_ranking_equals_accuracy_drops_of_the_naive_loop(small_model):
    _, model, images, labels = small_model
    probe = nw.Probe(model, (images, labels), chunk_size=7)
    for layer in probe.layers[:3]:
        probe.layer = layer
        base, per_unit = reference.ablation_table(model, layer, images, labels)
        ranking = probe.rank("ablation", progress=False)
        expected = np.array([reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in per_unit])
        np.testing.assert_allclose(ranking.scores, expected, atol=1e-12)
        classes = base.shape[1]
        matrix = np.stack(
            [
                reference.class_accuracy(base, labels, classes) - reference.class_accuracy(s, labels, classes)
                for s in per_unit
            ]
        )
        np.testing.assert_allclose(ranking.meta["drop_matrix"], matrix, atol=1e-12)
        target = int(labels[0])
        np.testing.assert_allclose(
            probe.rank("ablation", target=target, progress=False).scores, matrix[:, target], atol=1e-12
        )
        assert ranking.meta["engine"] == probe.site().ablator().path


def test_float32_agrees_up_to_prediction_flips_at_float_boundaries():
    model, shape = build("resnet18", seed=5)
    model = model.float()
    images, labels = make_data(model, 8, shape, seed=6, dtype=torch.float32)
    probe = nw.Probe(model, (images, labels), layer="layer3")
    units = list(range(0, 256, 4))
    got = engine_scores(probe, "zero", units)
    _, expected = reference.ablation_table(model, "layer3", images, labels, units=units)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    flipped = got.argmax(-1) != expected.argmax(-1)
    top2 = expected.topk(2, dim=-1).values
    assert ((top2[..., 0] - top2[..., 1])[flipped] < 1e-4).all()


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_evaluate_matches_hooks_for_several_units(small_model, mode):
    _, model, images, labels = small_model
    probe = nw.Probe(model, (images, labels), chunk_size=9)
    probe.layer = probe.layers[1]
    units = [0, 2, 3]
    fill = reference.fill_for(model, probe.layer, images, mode)
    expected = reference.scores_with(model, probe.layer, images, units, fill)
    for _ in range(2):  # the second call reads the cached cut
        ev = probe.evaluate(units, mode=mode)
        assert ev.accuracy == pytest.approx(reference.accuracy(expected, labels))
        np.testing.assert_array_equal(ev.predictions, expected.argmax(1).numpy())
        assert ev.loss == pytest.approx(float(torch.nn.functional.cross_entropy(expected, labels)))
    np.testing.assert_array_equal(ev.labels, labels.numpy())
    baseline = probe.evaluate()
    with torch.no_grad():
        assert baseline.accuracy == pytest.approx(reference.accuracy(model(images), labels))


def test_cached_cut_is_dropped_after_the_model_changes():
    model, shape = build("plain")
    images, labels = make_data(model, 12, shape, seed=2)
    probe = nw.Probe(model, (images, labels), layer="relu2")
    before = probe.evaluate([1]).loss
    with torch.no_grad():
        model.conv1.weight.mul_(-1.0)
    fill = torch.zeros_like(reference.layer_output(model, "relu2", images)[0])
    expected = reference.scores_with(model, "relu2", images, [1], fill)
    after = probe.evaluate([1])
    np.testing.assert_array_equal(after.predictions, expected.argmax(1).numpy())
    assert after.loss == pytest.approx(float(torch.nn.functional.cross_entropy(expected, labels)))
    assert after.loss != pytest.approx(before)

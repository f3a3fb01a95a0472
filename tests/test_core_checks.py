"""Issue 9's core points: explicit layers, declared method needs, one hook mechanism, the import structure, and
the bad inputs that used to give silent wrong answers (each now a clear error or the right answer)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.engine.hooks import forward_hooks
from neuronwidgets.methods import COSTS, MethodSpec, specs
from tests import reference
from tests.conftest import build, make_data
from tests.test_sacred import assert_same, fingerprint

PACKAGE = Path(nw.__file__).parent


@pytest.fixture
def plain():
    model, shape = build("plain", seed=5)
    images, labels = make_data(model, 24, shape, seed=6)
    return model, images, labels


# -- 1. every layer-bound call takes layer= -------------------------------------------------------------------


def test_every_layer_bound_call_takes_layer_and_leaves_the_default_alone(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    other = nw.Probe(model, (images, labels), layer="relu1")  # the same answers from a probe set to relu1
    ranking = probe.rank("ablation", layer="relu1", progress=False)
    assert ranking.layer == "relu1" and ranking.units == 6
    np.testing.assert_array_equal(ranking.scores, other.rank("ablation", progress=False).scores)
    np.testing.assert_array_equal(probe.evaluate([1, 2], layer="relu1").predictions, other.evaluate([1, 2]).predictions)
    np.testing.assert_allclose(  # maps come as float32
        probe.activation_maps(3, [0, 5], layer="relu1"),
        reference.layer_output(model, "relu1", images[[0, 5]])[:, 3],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(probe.top_images(3, 4, layer="relu1"), other.top_images(3, 4))
    np.testing.assert_array_equal(probe.components(layer="relu1").vectors, other.components().vectors)
    assert probe.layer_info("relu1").units == 6
    assert probe.layer == "relu2"  # nothing moved the default
    with pytest.raises(ValueError, match=r"unknown layer 'relu9'.*Inspectable layers: .*relu2"):
        probe.rank("activation", layer="relu9")
    with pytest.raises(TypeError, match="layer must be a module name"):
        probe.evaluate(layer=3)


def test_a_site_keeps_its_layer_when_the_probe_default_changes(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    site = probe.site()
    probe.layer = "relu1"
    assert site.layer == "relu2" and site.units == 8


# -- 4. methods declare what they need ----------------------------------------------------------------------------


def test_every_method_declares_its_needs_and_the_declarations_match_the_signatures():
    declared = specs()
    assert set(declared) == set(nw.methods())
    for name, spec in declared.items():
        assert isinstance(spec, MethodSpec) and spec.name == name
        assert spec.description and spec.description == nw.methods()[name]
        assert ("target" in spec.options) == spec.takes_target, name
        assert ("image" in spec.options) == spec.needs_image, name
        assert spec.preview is None or spec.preview in declared
        assert spec.cost in COSTS, name


def test_options_are_checked_once_before_any_work(plain):
    model, images, _labels = plain
    unlabelled = nw.Probe(model, images, layer="relu2")
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    try:
        for method in ("ablation", "car", "taylor", "selectivity", "pcace"):
            with pytest.raises(ValueError, match=f"{method} needs labels"):
                unlabelled.rank(method, progress=False)
        with pytest.raises(ValueError, match="activation with target= needs labels"):
            unlabelled.rank("activation", target=1, progress=False)
        with pytest.raises(ValueError, match="resampling_correlation explains one image"):
            unlabelled.rank("resampling_correlation", progress=False)
        with pytest.raises(TypeError, match=r"target must be a class index in 0\.\.4, got the bool True"):
            unlabelled.rank("activation", target=True, progress=False)
        with pytest.raises(ValueError, match=r"target must be a class index in 0\.\.4, got 2\.0"):
            unlabelled.rank("activation", target=2.0, progress=False)
        with pytest.raises(TypeError, match="a method name must be a str"):
            unlabelled.rank(["ablation"])
    finally:
        model._forward_hooks.clear()
    assert not calls  # refused before anything ran


# -- 5. one hook mechanism ------------------------------------------------------------------------------------------


def test_forward_hooks_are_removed_on_errors_also_midway_through_registering():
    modules = [nn.ReLU(), nn.ReLU(), "not a module"]
    with pytest.raises(AttributeError), forward_hooks((m, lambda *a: None) for m in modules):
        pass
    assert not modules[0]._forward_hooks and not modules[1]._forward_hooks
    relu = nn.ReLU()
    with pytest.raises(KeyboardInterrupt), forward_hooks([(relu, lambda *a: None)]):
        assert len(relu._forward_hooks) == 1
        raise KeyboardInterrupt
    assert not relu._forward_hooks


def test_only_the_hook_module_registers_hooks():
    sites = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "register_forward_hook" in path.read_text() or "register_forward_pre_hook" in path.read_text()
    ]
    assert sites == ["engine/hooks.py"]


# -- 3. the import structure ----------------------------------------------------------------------------------------


def _imports() -> dict[str, set[str]]:
    """Package module -> the package modules it imports (TYPE_CHECKING imports included)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("neuronwidgets"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(
                        full
                        if (PACKAGE.parent / Path(*full.split("."))).with_suffix(".py").exists()
                        or (PACKAGE.parent / Path(*full.split("."))).is_dir()
                        else node.module
                    )
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("neuronwidgets")}
        graph[name] = targets - {name}
    return graph


def test_the_import_graph_has_no_cycle_and_no_arrow_back_up():
    graph = _imports()

    def level(module: str) -> int:
        order = ["engine", "methods", "components", "evaluation", "probe", "widgets"]
        for i, prefix in enumerate(order):
            if module.startswith(f"neuronwidgets.{prefix}"):
                return i
        return -1  # foundations (data, ranking, render) and the modules on top (curves, cli, ...) are not ranked

    for module, targets in graph.items():
        if module.startswith("neuronwidgets.engine"):
            assert all(t.startswith("neuronwidgets.engine") or t in ("neuronwidgets.data",) for t in targets), module
        for target in targets:
            if level(module) >= 0 and level(target) >= 0:
                assert level(target) <= level(module), f"{module} imports {target}, a layer above it"
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state and node != "neuronwidgets":
            visit(node, [])
    for path in PACKAGE.rglob("*.py"):
        if "widgets" in path.relative_to(PACKAGE).parts[:1]:
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"ipywidgets", "anywidget"}, path


# -- 6. the fuzz findings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["trace", "script"])
def test_torchscript_models_are_refused_before_anything_runs(plain, make):
    model, images, labels = plain
    model.train()
    compiled = torch.jit.trace(model, images[:2]) if make == "trace" else torch.jit.script(model)
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    with pytest.raises(TypeError, match=r"TorchScript module.*pass that module instead"):
        nw.Probe(compiled, (images, labels))
    for key, value in compiled.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm buffers untouched

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = compiled

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(TypeError, match="its submodule 'inner' is a TorchScript module"):
        nw.Probe(Wrapper(), (images, labels))


class Switchable(nn.Module):
    """A model whose forward reads a Python flag: flipping it changes the graph without changing any tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6, 4)
        self.negate = False

    def forward(self, x):
        x = self.relu(self.conv(x))
        if self.negate:
            x = -x
        return self.fc(x.mean((2, 3)))


def test_a_python_level_change_to_the_model_is_not_answered_from_a_stale_trace():
    torch.manual_seed(0)
    model = Switchable().double().eval()
    images = torch.rand(20, 3, 6, 6, dtype=torch.float64) + 0.1
    labels = torch.randint(0, 4, (20,))
    probe = nw.Probe(model, (images, labels), layer="relu")
    probe.rank("ablation", progress=False)  # traces and caches the split with negate=False
    model.negate = True
    got = probe.rank("ablation", progress=False)
    base, per_unit = reference.ablation_table(model, "relu", images, labels)
    loss = torch.nn.functional.cross_entropy
    expected_loss = np.array([float(loss(s, labels) - loss(base, labels)) for s in per_unit])
    np.testing.assert_allclose(got.meta["loss_increase"], expected_loss, rtol=1e-9)
    with torch.no_grad():
        np.testing.assert_array_equal(probe.evaluate().predictions, model(images).argmax(1).numpy())
    model.negate = False
    np.testing.assert_array_equal(probe.evaluate().predictions, model(images).argmax(1).numpy())


@pytest.mark.parametrize(
    "units",
    ["12", [1.7], 1.0, True, [True, 2], np.array([0.5]), torch.tensor([1.0]), [[1, 2]], None, b"1"],
)
def test_unit_indices_must_be_integers(plain, units):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    with pytest.raises(TypeError, match="units"):
        probe.evaluate(ablate=units)


@pytest.mark.parametrize(
    "units", [3, np.int64(3), torch.tensor(3), [3, 1], (1, 3), np.array([1, 3]), torch.tensor([1, 3]), range(1, 4, 2)]
)
def test_integer_unit_indices_of_every_kind_are_accepted(plain, units):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    expected = [3] if np.ndim(units) == 0 and not isinstance(units, range) else [1, 3]
    assert list(probe.evaluate(ablate=units).ablated) == expected


def test_image_component_and_unit_arguments_refuse_floats_and_bools(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    with pytest.raises(TypeError, match="images"):
        probe.activation_maps(0, [1.5])
    with pytest.raises(TypeError, match="images"):
        probe.activation_maps(0, "3")
    with pytest.raises(TypeError, match="units"):
        probe.activation_maps(True, [0])
    with pytest.raises(TypeError, match="units"):
        probe.top_images(2.0)
    with pytest.raises(ValueError, match="k must be an int"):
        probe.top_images(2, k=True)
    with pytest.raises(TypeError, match="components"):
        probe.evaluate(ablate_components=["0"])
    with pytest.raises(ValueError, match=r"images \[99\] out of range: the data has images 0\.\.23"):
        probe.activation_maps(0, [99])
    assert probe.activation_maps(0, np.array([2, 1])).shape[0] == 2


def test_car_on_a_layer_of_one_unit_says_there_is_nothing_to_prune():
    class OneUnit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 3)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(1, 3)

        def forward(self, x):
            return self.fc(self.relu(self.conv(x)).mean((2, 3)))

    model = OneUnit().double().eval()
    images, labels = torch.rand(9, 3, 5, 5, dtype=torch.float64) + 0.1, torch.arange(9) % 3
    probe = nw.Probe(model, (images, labels), layer="relu")
    with pytest.raises(ValueError, match="car has nothing to prune: layer 'relu' has 1 unit"):
        probe.rank("car", progress=False)


def test_car_refuses_non_integer_counts(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    with pytest.raises(TypeError, match="per_step must be an int"):
        probe.rank("car", per_step=1.5, progress=False)
    with pytest.raises(TypeError, match="prune must be an int or None"):
        probe.rank("car", prune=True, progress=False)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sigma": math.nan}, ValueError, "sigma must be a finite number above 0"),
        ({"sigma": 0.0}, ValueError, "sigma must be a finite number above 0"),
        ({"sigma": -0.1}, ValueError, "sigma must be a finite number above 0"),
        ({"sigma": math.inf}, ValueError, "sigma must be a finite number above 0"),
        ({"top_k": 0}, ValueError, "top_k must be an int of at least 1"),
        ({"top_k": -2}, ValueError, "top_k must be an int of at least 1"),
        ({"copies": 2}, ValueError, "copies must be an int of at least 3"),
        ({"copies": 10.0}, ValueError, "copies must be an int"),
        ({"image": True}, TypeError, "image must be an int index"),
        ({"image": "0"}, TypeError, "image must be an int index"),
    ],
)
def test_resampling_refuses_bad_options(plain, options, error, match):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    options = {"image": 0, **options}
    with pytest.raises(error, match=match):
        probe.rank("resampling_correlation", progress=False, **options)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_resampling_refuses_an_image_with_nan_or_inf(plain, bad):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    image = images[0].clone()
    image[0, 1, 1] = bad
    for method in ("resampling_correlation", "resampling_precision"):
        with pytest.raises(ValueError, match="NaN or inf"):
            probe.rank(method, image=image, progress=False)


def test_bad_device_types_are_refused_at_construction(plain):
    model, images, labels = plain
    with pytest.raises(TypeError, match=r"device must be a str or torch\.device"):
        nw.Probe(model, (images, labels), device=0.5)
    before = fingerprint(model)
    nw.Probe(model, (images, labels), device="cpu").rank("activation", progress=False)
    assert_same(before, fingerprint(model))


def test_uint8_image_tensors_given_directly_follow_the_data_rule(plain):
    model, _images, _labels = plain
    pixels = torch.randint(1, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    probe = nw.Probe(model.float(), pixels.float() / 255, layer="relu2")
    np.testing.assert_array_equal(probe.activation_maps(2, pixels), probe.activation_maps(2, [0, 1, 2]))
    as_uint8 = probe.rank("resampling_correlation", image=pixels[0], progress=False)
    by_index = probe.rank("resampling_correlation", image=0, progress=False)
    np.testing.assert_allclose(as_uint8.scores, by_index.scores)
    with pytest.raises(TypeError, match="pixel scale is unknown"):
        probe.activation_maps(2, pixels.int())


def test_progress_and_cancel_are_checked_before_a_ranking_starts(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    with pytest.raises(TypeError, match="progress must be None or True"):
        probe.rank("activation", progress="yes")
    with pytest.raises(TypeError, match=r"cancel must be None, a threading\.Event"):
        probe.rank("ablation", cancel=1)


def test_a_model_at_chance_or_a_ranking_without_order_says_so():
    model, data = nw.demo.load()
    images, labels = data.images[:120], data.labels[:120]
    probe = nw.Probe(model, (images, (labels + 1) % 10), layer="relu3")  # labels that are not the model's classes
    for method in ("ablation", "taylor", "car"):
        with pytest.warns(nw.RankingWarning, match="may not be the model's class indices"):
            ranking = probe.rank(method, progress=False, **({"prune": 3} if method == "car" else {}))
        assert any("at or below chance" in note for note in ranking.meta["warnings"]), method
    with pytest.warns(nw.RankingWarning, match="every unit scored 0: this ranking gives no order"):
        probe.rank("ablation", progress=False)  # no unit can lower an accuracy of 0
    good = nw.Probe(model, (images, labels), layer="relu3")
    assert good.rank("ablation", progress=False).meta["warnings"] == []


def test_the_memory_budget_decides_what_is_kept_and_never_changes_the_answer(plain):
    model, images, labels = plain
    forwards = []
    kept = nw.Probe(model, (images, labels), layer="relu2", chunk_size=8, memory="64MB")
    streamed = nw.Probe(model, (images, labels), layer="relu2", chunk_size=8, memory=0)
    model.conv1.register_forward_hook(lambda *args: forwards.append(1))
    try:
        answers = []
        for probe in (kept, streamed):
            forwards.clear()
            first = probe.evaluate([1]).accuracy
            second = probe.evaluate([2, 3]).accuracy
            answers.append((first, second, len(forwards)))
    finally:
        model.conv1._forward_hooks.clear()
    assert answers[0][:2] == answers[1][:2]
    assert answers[0][2] < answers[1][2]  # the second evaluation reused the kept cut
    assert kept.memory == 64 * 10**6 and nw.Probe(model, images, memory="1.5 GiB").memory == int(1.5 * 2**30)
    for bad in ("lots", -1, True, "12 parsecs"):
        with pytest.raises(ValueError, match="memory must be a number of bytes"):
            nw.Probe(model, images, memory=bad)


def test_the_default_budget_is_a_sixteenth_of_the_machines_memory_and_one_cut_is_kept_at_a_time(plain):
    import os

    from neuronwidgets.engine.cache import default_memory

    model, images, labels = plain
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    expected = min(4 * 2**30, max(256 * 2**20, total // 16))
    probe = nw.Probe(model, (images, labels), layer="relu2")
    assert probe.memory == default_memory(torch.device("cpu")) == expected
    probe.evaluate([0], layer="relu1")
    probe.evaluate([0], layer="relu2")
    kept = [key for key in probe._cache._current() if key[0] == "crossings"]
    assert [key[-1] for key in kept] == ["relu2"]  # the other layer's cut was dropped: the budget holds


def test_a_ranking_reads_the_models_version_once_and_a_change_meanwhile_still_drops_its_results(plain):
    """Within `ResultCache.pinned` (each `rank` call) this thread reads the model's version once; another
    thread reads it as usual, and what the block kept is dropped at the next read once the model changed."""
    import threading

    model, images, labels = plain
    cache = nw.Probe(model, (images, labels), layer="relu2")._cache
    seen_by_other: list[object] = []
    with cache.pinned():
        cache.put("key", 1)
        with torch.no_grad():
            model.fc2.bias.add_(1.0)
        assert cache.get("key") == 1  # pinned: the version is not read again
        other = threading.Thread(target=lambda: seen_by_other.append(cache.get("key")))
        other.start()
        other.join()
        cache.put("kept under the old version", 2)
    assert seen_by_other == [None]
    assert cache.get("key") is None and cache.get("kept under the old version") is None


def test_autocast_runs_every_pass_in_the_lower_precision_and_stays_close(plain):
    model, images, labels = plain
    model = model.float()
    images = images.float()
    exact = nw.Probe(model, (images, labels), layer="relu2")
    fast = nw.Probe(model, (images, labels), layer="relu2", autocast="bfloat16")
    seen = []
    model.relu2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        rough = fast.rank("activation", progress=False)
        fast.rank("taylor", progress=False)
        fast.evaluate([0])
    finally:
        model.relu2._forward_hooks.clear()
    assert seen and set(seen) == {torch.bfloat16}
    np.testing.assert_allclose(rough.scores, exact.rank("activation", progress=False).scores, rtol=0.05, atol=0.01)
    assert fast.autocast is torch.bfloat16 and exact.autocast is None
    with pytest.raises(ValueError, match=r"autocast must be None, torch\.bfloat16 or torch\.float16"):
        nw.Probe(model, images, autocast="int8")


class _Generated(torch.utils.data.Dataset):
    """Images made on demand from their index (a dataset that is never all in memory)."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        self.n, self.shape = n, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        generator = torch.Generator().manual_seed(i)
        return torch.rand(self.shape, generator=generator, dtype=torch.float64) + 0.05, i % 5


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
def test_a_dataloader_with_worker_processes_and_pinned_memory_gives_the_same_rankings(plain):
    model, _images, _labels = plain
    dataset = _Generated(40, (3, 8, 8))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=2, pin_memory=True)
    direct = nw.Probe(model, dataset, layer="relu2", chunk_size=16)
    loaded = nw.Probe(model, loader, layer="relu2")
    for method in ("activation", "ablation", "taylor"):
        # equal up to float64 rounding: a chunk is run in slices timed as they run (`engine.slicing`), and a
        # conv's summation order depends on its batch size, so on a busy machine the last bits may differ
        np.testing.assert_allclose(
            loaded.rank(method, progress=False).scores, direct.rank(method, progress=False).scores, rtol=1e-12
        )
    np.testing.assert_array_equal(loaded.top_images(1, 5), direct.top_images(1, 5))
    np.testing.assert_array_equal(loaded.activation_maps(1, [3, 38]), direct.activation_maps(1, [3, 38]))

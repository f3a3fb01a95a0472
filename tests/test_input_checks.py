"""Unusual input found by fuzzing: a clear error naming the problem and the fix, or the right answer.

Data order and counts (samplers, ``drop_last``), labels (floats, bools, one-hot), uint8 images, type checks
when the data, progress and cancel options are given, and the command line's errors.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import neuronwidgets as nw
from neuronwidgets import cli
from neuronwidgets.data import DataSource
from neuronwidgets.engine.progress import Progress
from tests.conftest import build, make_data

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def plain():
    model, shape = build("plain")
    images, labels = make_data(model, 10, shape, seed=1)
    return model, images, labels


class Items(Dataset):
    """A map-style dataset of (image, label) items exactly as given (no conversion)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class Reversed(Sampler):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self):
        return self.n


# -- DataLoader order and counts ------------------------------------------------------------------------------


class Backwards(BatchSampler):
    """Batches in reverse order: a batch sampler that reorders."""

    def __iter__(self):
        return reversed(list(super().__iter__()))


def _unordered_loaders(dataset):
    """Loaders that do not read ``dataset`` in order, by the sampler the refusal should name."""
    n = len(dataset)
    return {
        "sampler (SubsetRandomSampler)": DataLoader(dataset, sampler=SubsetRandomSampler(range(n)), batch_size=4),
        "sampler (WeightedRandomSampler)": DataLoader(dataset, sampler=WeightedRandomSampler([1.0] * n, n)),
        "sampler (Reversed)": DataLoader(dataset, sampler=Reversed(n), batch_size=4),
        "batch_sampler (list)": DataLoader(dataset, batch_sampler=[[3, 2, 1, 0], list(range(4, n))]),
        "batch_sampler (Backwards)": DataLoader(dataset, batch_sampler=Backwards(SequentialSampler(dataset), 4, False)),
        "sampler (Reversed) ": DataLoader(dataset, batch_sampler=BatchSampler(Reversed(n), 4, False)),
    }


def test_a_loader_that_does_not_read_in_order_is_refused(plain):
    model, images, labels = plain
    dataset = TensorDataset(images, labels)
    for name, loader in _unordered_loaders(dataset).items():
        expected = rf"DataLoader's {re.escape(name.strip())} does not read the dataset in order.*Subset\(dataset"
        with pytest.raises(ValueError, match=expected):
            nw.Probe(model, loader)
    for loader in (DataLoader(dataset, shuffle=True), DataLoader(dataset, sampler=RandomSampler(dataset))):
        with pytest.raises(ValueError, match=r"shuffles its data.*shuffle=False"):
            nw.Probe(model, loader)


def test_a_sequential_sampler_gives_the_tensors_answer(plain):
    model, images, labels = plain
    dataset = TensorDataset(images, labels)
    expected = nw.Probe(model, (images, labels)).rank("ablation", progress=False)
    for loader in (
        DataLoader(dataset, sampler=SequentialSampler(dataset), batch_size=3),
        DataLoader(dataset, batch_sampler=BatchSampler(SequentialSampler(dataset), 3, drop_last=False)),
        DataLoader(dataset, batch_size=None),
    ):
        ranking = nw.Probe(model, loader).rank("ablation", progress=False)
        np.testing.assert_allclose(ranking.scores, expected.scores)
    with pytest.raises(ValueError, match="does not read the dataset in order"):
        nw.Probe(model, DataLoader(dataset, sampler=SequentialSampler(range(4))))  # a sampler over 4 of 10 items


@pytest.mark.parametrize("how", ["batch_size", "batch_sampler"])
def test_drop_last_means_the_images_the_loader_yields(plain, how):
    model, images, labels = plain
    dataset = TensorDataset(images, labels)
    if how == "batch_size":
        loader = DataLoader(dataset, batch_size=4, drop_last=True)
    else:
        loader = DataLoader(dataset, batch_sampler=BatchSampler(SequentialSampler(dataset), 4, drop_last=True))
    probe = nw.Probe(model, loader, layer="relu2")
    same = nw.Probe(model, (images[:8], labels[:8]), layer="relu2")  # 10 images, batches of 4: 8 are yielded
    assert len(probe.source) == 8
    ranking = probe.rank("activation", progress=False)
    assert ranking.meta["images"] == 8
    np.testing.assert_allclose(ranking.scores, same.rank("activation", progress=False).scores)
    top = probe.top_images(0, k=20)
    assert len(top) == 8 and top.max() < 8
    np.testing.assert_array_equal(top, same.top_images(0, k=20))
    evaluation = probe.evaluate()
    assert len(evaluation.predictions) == 8
    assert evaluation.accuracy == same.evaluate().accuracy
    torch.testing.assert_close(probe.source.take([7, 0]).images, images[[7, 0]])
    assert probe.source.take([7]).labels.tolist() == [int(labels[7])]
    with pytest.raises(IndexError, match=r"\[9\] are out of range for 8 images .*drop_last=True"):
        probe.source.take([9])
    with pytest.raises((IndexError, ValueError), match="out of range"):
        probe.images([9])


def test_a_loader_yielding_fewer_images_than_counted_is_named(plain):
    model, images, labels = plain

    def first_two(batch):
        return torch.stack([x for x, _ in batch[:2]]), torch.stack([y for _, y in batch[:2]])

    probe = nw.Probe(model, DataLoader(TensorDataset(images, labels), batch_size=5, collate_fn=first_two))
    with pytest.raises(ValueError, match="the DataLoader yielded 4 images, but its dataset and batch size give 10"):
        probe.rank("activation", progress=False)


# -- labels ---------------------------------------------------------------------------------------------------


def test_float_and_bool_labels_are_refused_from_every_kind_of_data(plain):
    model, images, labels = plain
    floats = labels.double()
    floats[3] = 1.7
    bools = labels > 1
    for data in ((images, floats), Items(images, floats.tolist()), Items(images, floats)):
        with pytest.raises(ValueError, match=r"non-integer floats: images \[3\] have labels \[1\.7\]"):
            nw.Probe(model, data).rank("activation", progress=False)
    for data in ((images, bools), Items(images, bools.tolist()), DataLoader(TensorDataset(images, bools))):
        with pytest.raises(ValueError, match="got booleans"):
            nw.Probe(model, data).rank("activation", progress=False)
    with pytest.raises(TypeError, match=r"labels of images 0\.\. must be integer class indices, got str"):
        nw.Probe(model, Items(images, ["cat"] * len(images)))


def test_whole_float_labels_from_a_dataset_count_as_tensor_labels_do(plain):
    model, images, labels = plain
    expected = nw.Probe(model, (images, labels)).evaluate()
    for data in ((images, labels.double()), Items(images, labels.double().tolist())):
        assert nw.Probe(model, data).evaluate().accuracy == expected.accuracy


def test_one_hot_labels_say_so(plain):
    model, images, labels = plain
    one_hot = torch.nn.functional.one_hot(labels, 5)
    for data in ((images, one_hot), Items(images, one_hot), DataLoader(TensorDataset(images, one_hot), batch_size=4)):
        with pytest.raises(ValueError, match=r"labels of shape \(\d+, 5\) .*look one-hot.*labels\.argmax\(1\)"):
            nw.Probe(model, data).rank("activation", progress=False)


def test_a_label_column_counts_as_one_label_per_image(plain):
    model, images, labels = plain
    expected = nw.Probe(model, (images, labels)).evaluate()
    column = labels[:, None]
    for data in ((images, column), Items(images, column), DataLoader(TensorDataset(images, column), batch_size=4)):
        evaluation = nw.Probe(model, data).evaluate()
        np.testing.assert_array_equal(evaluation.labels, expected.labels)
    with pytest.raises(ValueError, match="one label per image: got 9 labels for 10 images"):
        nw.Probe(model, (images, column[:9]))


# -- images ---------------------------------------------------------------------------------------------------


def test_uint8_images_are_scaled_to_the_unit_range(plain):
    model, _, labels = plain
    pixels = torch.randint(0, 256, (10, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    scaled = pixels.float() / 255
    expected = nw.Probe(model, (scaled, labels), layer="relu2").rank("activation", progress=False)
    for data in ((pixels, labels), (pixels.numpy(), labels), Items(pixels, labels), DataLoader(Items(pixels, labels))):
        probe = nw.Probe(model, data, layer="relu2")
        torch.testing.assert_close(probe.images([4, 2]), scaled[[4, 2]])
        np.testing.assert_array_equal(probe.rank("activation", progress=False).scores, expected.scores)


def test_images_of_other_integer_dtypes_are_refused(plain):
    model, _, labels = plain
    for images in (torch.randint(0, 256, (10, 3, 8, 8)), torch.zeros(10, 3, 8, 8, dtype=torch.bool)):
        for data in ((images, labels), Items(images, labels)):
            with pytest.raises(TypeError, match=rf"dtype {images.dtype}, whose pixel scale is unknown.*uint8"):
                nw.Probe(model, data)


# -- type checks when the options are given --------------------------------------------------------------------


def test_chunk_size_must_be_an_int_of_at_least_one(plain):
    model, images, labels = plain
    for bad in (True, 2.5, "4", None):
        with pytest.raises(TypeError, match="chunk_size must be an int"):
            nw.Probe(model, (images, labels), chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size must be at least 1, got 0"):
        DataSource(images, chunk_size=0)
    assert DataSource(images, chunk_size=np.int64(4)).num_chunks == 3


def test_progress_and_cancel_options_are_checked_when_given(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels))
    with pytest.raises(TypeError, match=r"progress must be None or True .* or a callable"):
        probe.rank("activation", progress="yes")
    for bad in (True, 1, "stop"):
        with pytest.raises(TypeError, match=r"cancel must be None, a threading\.Event .* or a callable"):
            probe.rank("activation", progress=False, cancel=bad)
    with pytest.raises(TypeError, match="cancel must be"):
        Progress.within("work", 3, Progress("outer", 3, False), cancel=0)
    seen = []
    probe.rank("activation", progress=seen.append, cancel=threading.Event())
    probe.rank("activation", progress=False, cancel=lambda: False)
    assert seen and seen[-1].fraction == 1.0


# -- the command line -----------------------------------------------------------------------------------------


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """A folder on sys.path with a module of model factories and a saved images/labels pair."""
    (tmp_path / "shop.py").write_text(
        "from tests.models import PlainCNN\n"
        "def broken():\n    raise RuntimeError('weights file not found')\n"
        "def good():\n    return PlainCNN().double()\n"
        "class Local(PlainCNN):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, shape = build("plain")
    torch.save(make_data(model, 6, shape, seed=0), tmp_path / "data.pt")
    return tmp_path


def test_cli_input_errors_are_one_line_and_exit_code_2(shop, capsys, monkeypatch):
    (shop / "garbage.pt").write_bytes(b"this is not a checkpoint")
    data = str(shop / "data.pt")
    cases = {
        "garbage": ([str(shop / "garbage.pt")], r"cannot load model '.*garbage\.pt' with torch\.load .*torch\.save"),
        "raises": (["shop:broken"], r"model factory 'shop:broken' raised RuntimeError: weights file not found"),
        "missing": ([str(shop / "nope.pt")], r"'.*nope\.pt' is neither an existing file nor 'module:callable'"),
        "no module": (["nosuchmodule:make"], r"cannot import module 'nosuchmodule' .*ModuleNotFoundError"),
        "no attribute": (["shop:absent"], r"module 'shop' has no attribute 'absent'"),
        "bad spec": (["shop:"], r"'shop:' is not 'module:callable'"),
    }
    for name, (model, message) in cases.items():
        assert cli.main(["rank", "--model", *model, "--data", data]) == 2, name
        assert re.search(message, _error_line(capsys)), name
    assert cli.main(["rank", "--model", "shop:good", "--data", data, "--method", "nope"]) == 2
    assert "unknown method 'nope'" in _error_line(capsys)
    assert cli.main(["rank", "--model", "shop:good", "--data", data, "--method", "weight_l1"]) == 0


def test_cli_unimportable_pickled_class(shop, capsys, monkeypatch):
    import shop as module

    torch.save(module.Local().double(), shop / "local.pt")
    monkeypatch.delitem(sys.modules, "shop")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(shop)])
    assert cli.main(["layers", "--model", str(shop / "local.pt"), "--data", str(shop / "data.pt")]) == 2
    line = _error_line(capsys)
    assert "pickled with a class that cannot be imported here (ModuleNotFoundError: No module named 'shop')" in line
    assert "PYTHONPATH" in line and "state_dict" in line


def test_cli_in_a_shell_exits_2_and_debug_shows_the_traceback(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    command = [sys.executable, "-m", "neuronwidgets.cli", "rank", "--model", str(garbage), "--data", str(garbage)]
    plain = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.startswith("error: cannot load model") and plain.stderr.count("\n") == 1
    debug = subprocess.run([*command, "--debug"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "CliError" in debug.stderr

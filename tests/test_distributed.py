"""Data-parallel probes: 2 and 3 gloo processes on 127.0.0.1 give one process's results (counts exactly, float64
sums to 1e-12), leave each rank's model untouched, and fail together, clearly and in time."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import neuronwidgets as nw
from neuronwidgets import cli
from neuronwidgets.data import DataSource
from neuronwidgets.engine import distributed
from tests import distributed_worker as worker
from tests.e2e.servers import free_port
from tests.test_sacred import assert_same

# Results that are float sums (their order of addition differs across ranks); every other result is a count or
# computed from counts alone, and must be equal exactly.
SUMS = {"tiebreak", "loss_increase", "loss", "variance", "class_means", "raw", "vectors", "variances"}
SUMMED_SCORES = {"activation", "selectivity", "taylor"}


@contextmanager
def started(size: int, out: Path, plan: list[tuple[str, str, dict[str, Any]]], limit: float = 120) -> Iterator[None]:
    """Run ``plan`` (see `distributed_worker.main`) on ``size`` spawned ranks while the block runs; on leaving it,
    wait for them: every rank is ended (killed if it outlives ``limit`` seconds) whatever happens."""
    context = multiprocessing.get_context("spawn")
    port = free_port()
    ranks = [
        context.Process(target=worker.main, args=(rank, size, port, str(out), plan), daemon=True)
        for rank in range(size)
    ]
    try:
        for process in ranks:
            process.start()
        deadline = time.monotonic() + limit
        yield
        for process in ranks:
            process.join(max(0.0, deadline - time.monotonic()))
        hung = [rank for rank, process in enumerate(ranks) if process.is_alive()]
        assert not hung, f"ranks {hung} still running after {limit} s"
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
            process.join(10)


def spawn(size: int, out: Path, plan: list[tuple[str, str, dict[str, Any]]], limit: float = 120) -> None:
    """Run ``plan`` on ``size`` spawned ranks and wait for them (`started`)."""
    with started(size, out, plan, limit):
        pass


SIZE = 3
TIMEOUT = 3.0  # the short group's, in the errors scenario
# name: (ranks sharing the data, images, how the data is given, chunk size, layer, how exact ablation is shared:
# "auto" is the rule, which shares the units of these small datasets except in closed form, "images" forces it)
CASES = {
    "2 ranks, 7 images": (2, 7, "dataset", 2, "conv2", "auto"),
    "3 ranks, 11 images from a DataLoader": (3, 11, "loader", 128, "conv2", "images"),
    "3 ranks, 360 images": (3, 360, "tensors", 128, "relu3", "auto"),  # its ablation in closed form: quick
}
SHARED = {"2 ranks, 7 images": True, "3 ranks, 11 images from a DataLoader": False, "3 ranks, 360 images": False}


@pytest.fixture(scope="module")
def ranks_ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spawn of `SIZE` gloo ranks runs every case, then the errors scenario; the directory of their results."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not built")
    out = tmp_path_factory.mktemp("ranks")
    fields = ("ranks", "images", "kind", "chunk_size", "layer", "share")
    plan = [(name, "methods", dict(zip(fields, case))) for name, case in CASES.items()]
    spawn(SIZE, out, [*plan, ("errors", "errors", {"timeout": TIMEOUT})])
    return out


def results_of(out: Path, name: str, size: int = SIZE) -> list[Any]:
    """Each rank's result of ``name``; a rank that crashed fails the test with its traceback."""
    found = []
    for rank in range(size):
        path = out / f"{name}-{rank}.pkl"
        assert path.exists(), f"rank {rank} wrote no result for {name}"
        result = pickle.loads(path.read_bytes())
        if isinstance(result, dict) and "crashed" in result:
            pytest.fail(f"rank {rank} crashed in {name}:\n{result['crashed']}")
        found.append(result)
    return found


def compare(got: dict[str, Any], want: dict[str, Any], rank: int) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        method, field = key.split(": ")
        where = f"rank {rank}, {key}"
        # sampled ablation's scores are pulled toward what the (float) loss increase predicts
        sampled = ("top=" in method or "fraction=" in method) and field in ("scores", "ablated_accuracy")
        if field in SUMS or sampled or (field == "scores" and method.split()[0] in SUMMED_SCORES):
            scale = float(np.nanmax(np.abs(value))) if np.size(value) else 0.0
            np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12 * scale, err_msg=where)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=where)
            assert np.asarray(got[key]).dtype == np.asarray(value).dtype, where


@pytest.fixture
def one_thread(monkeypatch):
    """The single-process reference with one thread, as the ranks run: quicker on a busy machine; and, as
    there, sampled ablation looks at its intervals after every round (where to look is otherwise timed, and
    the intervals are intersected over the looks)."""
    monkeypatch.setattr("neuronwidgets.engine.progressive.LOOK_COST", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", list(CASES))
def test_ranks_give_one_process_results(ranks_ran, one_thread, case):
    ranks, images, kind, chunk_size, layer, _ = CASES[case]
    model, data = worker.demo(images)
    want = worker.results(nw.Probe(model, worker.data_as(kind, data), layer=layer, chunk_size=chunk_size))
    outs = results_of(ranks_ran, case)
    assert outs[ranks:] == [None] * (SIZE - ranks)  # outside the group given as group=
    outs = outs[:ranks]
    shards = [out["shard"] for out in outs]
    assert [i for shard in shards for i in shard] == list(range(images))  # each image once, in rank order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for rank, out in enumerate(outs):
        compare(out["results"], want, rank)
        assert out["units shared"] == SHARED[case]  # exact ablation's ranks shared the units, or the images
        assert_same(*out["fingerprints"])
        assert all(done == total > 0 for done, total in out["progress"].values()), out["progress"]
        assert out["unseeded"][0] == outs[0]["unseeded"][0]  # without seed=, rank 0 draws one for all
        np.testing.assert_array_equal(out["unseeded"][1], outs[0]["unseeded"][1])
        refused = out["refusals"]
        for call in ("pcace", "contribution"):
            assert refused[call][0] == "NotImplementedError", (call, refused[call])
            assert "across processes" in refused[call][1]
        assert "rank('activation')" in refused["pcace"][1]


def test_ranks_fail_together_clearly_and_in_time(ranks_ran):
    outs = results_of(ranks_ran, "errors")
    for step in ("images differ", "layer differs", "calls differ"):  # the same refusal on every rank
        raised = [out[step]["raised"] for out in outs]
        assert all(r is not None and r[3] for r in raised), (step, raised)  # GroupMismatch
        assert len({r[1] for r in raised}) == 1, raised
    assert "images: rank 0 7, rank 1 8, rank 2 9" in outs[0]["images differ"]["raised"][1]
    assert "layer: rank 0 'conv2', rank 1 'conv3', rank 2 'conv2'" in outs[0]["layer differs"]["raised"][1]
    differ = outs[0]["calls differ"]["raised"][1]
    assert "rank 0: rank('activation')" in differ and "rank 1: rank('taylor')" in differ
    for out in outs:
        assert out["too few images"]["raised"][:2] == (
            "ValueError",
            "2 images cannot be shared by 3 ranks: give every rank at least one",
        )

    own = outs[-1]["bad data"]  # the last rank's shard holds a NaN: its own error
    assert own["raised"][0] == "ValueError" and "NaN" in own["raised"][1] and not own["raised"][2]
    for out in outs[:-1]:  # the others are told at once, not by the timeout
        told = out["bad data"]["raised"]
        assert told[0] == "DistributedError" and f"rank {SIZE - 1} failed" in told[1], told
        assert "ValueError during rank('activation')" in told[1] and "NaN" in told[1]
    assert max(out["bad data"]["seconds"] for out in outs) < TIMEOUT
    assert all(out["after a failure"]["raised"] is None for out in outs)

    waited = outs[0]["a rank never comes"]
    assert waited["raised"][0] == "DistributedError" and "timed out" in waited["raised"][1], waited
    assert TIMEOUT - 0.5 < waited["seconds"] < TIMEOUT + 10
    for out in outs:
        assert_same(*out["fingerprints"])


@pytest.mark.parametrize("size", [2, 3, 4, 7])
@pytest.mark.parametrize("images", [1, 2, 7, 11, 360])
def test_shards_cover_every_image_once(size, images):
    shards = [distributed.Group(None, rank, size, torch.device("cpu")).shard(images) for rank in range(size)]
    assert [i for shard in shards for i in shard] == list(range(images))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("kind", ["tensors", "loader", "loader of one"])
def test_a_data_source_reads_only_its_span_with_global_indices(kind):
    images, labels = torch.rand(11, 1, 2, 2), torch.arange(11) % 3
    data: Any = {
        "tensors": (images, labels),
        "loader": DataLoader(TensorDataset(images, labels), batch_size=4),
        "loader of one": DataLoader(TensorDataset(images, labels), batch_size=None),
    }[kind]
    source = DataSource(data, chunk_size=3)
    for span in (range(0, 3), range(3, 7), range(7, 11), range(5, 6)):
        chunks = list(source.chunks(span))
        assert len(chunks) == source.count_chunks(span)
        assert [c.start for c in chunks] == sorted(c.start for c in chunks) and chunks[0].start == span.start
        assert torch.equal(torch.cat([c.images for c in chunks]), images[span.start : span.stop])
        assert torch.equal(torch.cat([c.labels for c in chunks]), labels[span.start : span.stop])


def test_without_a_process_group_a_probe_works_alone():
    assert not torch.distributed.is_available() or not torch.distributed.is_initialized()
    model, data = nw.demo.load()
    assert nw.Probe(model, data).group is None
    assert nw.Probe(model, data, group=False).group is None
    with pytest.raises(TypeError, match=r"group must be a torch\.distributed ProcessGroup"):
        nw.Probe(model, data, group="gloo")


def test_describe_shows_plain_options_and_the_types_of_others():
    text = distributed.describe("evaluate()", layer="conv2", ablate=np.array([1, 2]), transform=abs, mode=None)
    assert text == "evaluate() with ablate=[1, 2], layer='conv2', mode=None, transform=<builtin_function_or_method>"


def torchrun(ranks: int, *arguments: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node ranks -m neuronwidgets ...`` on 127.0.0.1, one thread per rank."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1"]
    command += [f"--master-port={free_port()}", "-m", "neuronwidgets", *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)


def test_the_command_under_torchrun_prints_once_what_one_process_prints(capsys):
    arguments = ["rank", "--layer", "relu2", "--images", "121"]
    alone = cli.main([*arguments, "--format", "csv"])
    want = capsys.readouterr().out
    ran = torchrun(2, *arguments, "--format", "csv")
    assert alone == ran.returncode == 0, ran.stderr
    got, expected = (np.genfromtxt(io.StringIO(text), delimiter=",", names=True) for text in (ran.stdout, want))
    assert len(got) == 32  # one header line and one row per unit: printed by rank 0 only
    for column in ("rank", "unit", "score"):  # accuracy drops are counts: equal exactly, and so the order
        np.testing.assert_array_equal(got[column], expected[column])
    np.testing.assert_allclose(got["tiebreak"], expected["tiebreak"], rtol=1e-5)  # float32 loss sums

    table = torchrun(2, *arguments, "--top", "4").stdout.splitlines()
    assert cli.main([*arguments, "--top", "4"]) == 0
    one = capsys.readouterr().out.splitlines()
    assert len(table) == len(one) == 10
    seconds = 1  # the line with the time taken, which differs
    assert table[:seconds] + table[seconds + 1 :] == one[:seconds] + one[seconds + 1 :]
    assert table[seconds].startswith("121 images, ")


def test_an_error_under_torchrun_is_one_line_from_rank_0():
    ran = torchrun(2, "rank", "--images", "20", "--method", "pcace", "--target", "1")
    assert ran.returncode != 0 and ran.stdout == ""
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, ran.stderr
    assert "NotImplementedError" in errors[0] and "pcace" in errors[0] and "supported" in errors[0].lower()

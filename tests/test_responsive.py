"""Issue 10, points 3-5: interactive work does not wait for a long ranking, Cancel is always safe, and the
first ETA is timed after the warm-up. No timing assertions: orderings are asserted, figures are printed."""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.engine.guard import ModelLock, evaluating, model_lock, no_yield, urgent, yield_model
from neuronwidgets.engine.hooks import forward_hooks
from neuronwidgets.engine.progress import Progress, ProgressInfo
from neuronwidgets.widgets._worker import BACKGROUND, Job, Worker, lane_of, worker_for
from tests.test_sacred import assert_same, fingerprint
from tests.test_widgets import custom, update


def demo_probe(images: int = 96, chunk_size: int = 8, layer: str = "relu2", **options) -> nw.Probe:
    """The demo model on its first ``images`` test images, in small chunks (many yield points)."""
    model, data = nw.demo.load()
    pairs = [data[i] for i in range(images)]
    x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
    y = torch.tensor([int(p[1]) for p in pairs])
    return nw.Probe(model, (x, y), layer=layer, chunk_size=chunk_size, **options)


def in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# -- the model lock -------------------------------------------------------------------------------------------


def test_lock_is_reentrant_and_serves_waiters_in_arrival_order():
    lock, order = ModelLock(), []
    with lock, lock:
        assert lock.held()
        threads = []
        for name in "abc":
            threads.append(in_thread(lambda n=name: (lock.acquire(), order.append(n), lock.release())))
            while lock.waiting() < len(threads):
                time.sleep(0.001)
    for t in threads:
        t.join(5)
    assert order == ["a", "b", "c"] and not lock.held()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_lend_releases_every_level_to_the_waiters_then_takes_them_back():
    lock, seen = ModelLock(), []
    with lock, lock, lock:
        assert not lock.lend()  # nobody waits: nothing to do
        waiter = in_thread(lambda: (lock.acquire(), seen.append("waiter ran"), lock.release()))
        while not lock.waiting():
            time.sleep(0.001)
        assert lock.lend() and seen == ["waiter ran"]
        assert lock.held()
    assert not lock.held() and lock.acquire(blocking=False)  # all three levels came back, and were released
    lock.release()
    waiter.join(5)


def test_a_waiter_that_times_out_gives_up_its_place():
    lock = ModelLock()
    with lock:
        result = []
        t = in_thread(lambda: result.append(lock.acquire(timeout=0.05)))
        t.join(5)
        assert result == [False] and lock.waiting() == 0
        assert not lock.lend()


def test_no_lend_while_hooks_are_on_or_inside_no_yield():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    lock = model_lock(model)
    with evaluating(model):
        waiter = in_thread(lambda: (lock.acquire(), lock.release()))
        while not lock.waiting():
            time.sleep(0.001)
        with forward_hooks([(model[0], lambda *a: None)]):
            assert not yield_model(model)  # another pass's forward would run this pass's hook
        with no_yield():
            assert not yield_model(model)
        assert yield_model(model)
    waiter.join(5)


def test_a_lent_model_has_the_users_flags_and_eval_mode_comes_back():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout())
    model.train()
    model[1].eval()  # a frozen BatchNorm in a training model
    user = [m.training for m in model.modules()]
    lock, seen = model_lock(model), []

    def look() -> None:
        with lock:
            seen.append([m.training for m in model.modules()])

    with evaluating(model), evaluating(model):  # nested, as rankings nest passes
        waiter = in_thread(look)
        while not lock.waiting():
            time.sleep(0.001)
        assert yield_model(model)
        assert not any(m.training for m in model.modules())
    waiter.join(5)
    assert seen == [user] and [m.training for m in model.modules()] == user


@pytest.mark.parametrize(
    ("method", "options"), [("pcace", {"target": 3}), ("resampling_correlation", {"image": 5, "copies": 96})]
)
def test_pcace_and_resampling_lend_the_model_between_chunks_without_their_hooks_on(method, options):
    """Their hooks are on for each chunk's forward only: a request waiting for the model runs mid-pass (and
    sees no hook of theirs), and the ranking is the same as without it."""
    probe = demo_probe(images=240, chunk_size=8)
    expected = probe.rank(method, progress=False, **options)
    started, result, infos = threading.Event(), {}, []

    def progress(info: ProgressInfo) -> None:
        infos.append(info)
        if info.done >= 1:
            started.set()

    ranking = in_thread(lambda: result.setdefault("ranking", probe.rank(method, progress=progress, **options)))
    assert started.wait(60)
    with evaluating(probe.model):  # waits for the ranking to lend the model at its next chunk boundary
        mid_pass = infos[-1].total is not None and infos[-1].done < infos[-1].total
        hooks = sum(len(m._forward_hooks) for m in probe.model.modules())
        probe.model(torch.randn(2, 1, 8, 8))  # a forward of the waiting work records nothing for the ranking
    ranking.join(60)
    assert mid_pass, f"the model was free only after the pass: {infos[-1]}"
    assert hooks == 0
    assert (result["ranking"].scores == expected.scores).all()


# -- ETA ------------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_eta_comes_from_the_first_timed_step_not_the_warmup():
    clock, infos = FakeClock(), []
    bar = Progress("ablating", 100, infos.append, clock=clock)
    clock.now += 200.0  # the first step: tracing, caches, oneDNN warm-up
    bar.advance()
    assert infos[-1].eta is None  # only the warm-up is timed: no estimate yet, rather than a 20x one
    for _ in range(4):
        clock.now += 1.0  # each further step takes a second
        bar.advance()
    assert infos[-1].eta == pytest.approx(95.0)  # 95 steps left at 1 s each (the warm-up's rate: 9,500 s)
    assert infos[-1].elapsed == pytest.approx(204.0)
    clock.now += 0.5
    bar.advance(0.5)  # a part of a step counts by its share: half a step in half a second
    assert bar.info().eta == pytest.approx(94.5)


def test_an_eta_without_a_warmup_is_the_whole_rate_as_before():
    assert ProgressInfo("x", 2, 10, 4.0).eta == pytest.approx(16.0)
    assert ProgressInfo("x", 0, 10, 4.0).eta is None


def test_a_slice_of_a_step_is_reported_without_being_counted_and_without_an_eta_before_the_first_step():
    clock, seen = FakeClock(), []
    bar = Progress("reading", 4, seen.append, clock=clock)
    clock.now += 3.0
    bar.within_step(0.5)
    assert seen[-1].done == 0.5 and seen[-1].eta is None and bar.done == 0  # no rate before a step ended
    bar.advance()
    clock.now += 2.0
    bar.within_step(0.5)
    assert seen[-1].done == 1.5 and seen[-1].eta == pytest.approx(2.5 / 0.5 * 2.0)
    assert bar.done == 1


# -- lanes ----------------------------------------------------------------------------------------------------


def test_interactive_slots_run_on_a_lane_per_kind():
    assert [lane_of(slot) for slot in ("123:overlay", "7:thumbnail", "7:evaluate")] == [
        "overlay",
        "thumbnail",
        "evaluate",
    ]
    assert lane_of("123:overlay") == lane_of("9:overlay") and lane_of("123:rank") == BACKGROUND


def test_urgent_waiters_go_first_and_urgent_holders_lend_only_to_them():
    lock, order = ModelLock(), []

    def wait(name: str, is_urgent: bool) -> None:
        with urgent() if is_urgent else no_yield():
            lock.acquire()
            order.append(name)
            lock.release()

    with lock:
        threads = []
        for name, is_urgent in (("ranking", False), ("overlay", True), ("thumbnail", True)):
            threads.append(in_thread(wait, name, is_urgent))
            while lock.waiting() < len(threads):
                time.sleep(0.001)
    for t in threads:
        t.join(5)
    assert order == ["overlay", "thumbnail", "ranking"]  # urgent first, each kind in arrival order

    order.clear()
    with urgent(), lock:
        background = in_thread(wait, "ranking", False)
        while lock.waiting() < 1:
            time.sleep(0.001)
        assert not lock.lend()  # urgent work does not give the model to a ranking
        click = in_thread(wait, "overlay", True)
        while lock.waiting() < 2:
            time.sleep(0.001)
        assert lock.lend() and order == ["overlay"]  # but to a click, and takes it back before the ranking
    background.join(5)
    click.join(5)
    assert order == ["overlay", "ranking"]


def test_an_interactive_job_runs_while_a_background_job_runs():
    worker, release, order = Worker(idle_seconds=0.2), threading.Event(), []

    def long(job):
        release.wait(10)
        return "ranking"

    worker.submit(Job("1:rank", long, order.append, order.append))
    worker.submit(Job("1:overlay", lambda job: "overlay", order.append, order.append))
    deadline = time.monotonic() + 10
    while "overlay" not in order and time.monotonic() < deadline:
        time.sleep(0.005)
    assert order == ["overlay"] and worker.busy()
    release.set()
    assert worker.wait(10) and order == ["overlay", "ranking"] and not worker.busy()
    deadline = time.monotonic() + 5
    while worker.threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.threads() == []  # idle lanes end their threads


def passes_off_the_lock(model: nn.Module) -> tuple[list[str], object]:
    """A global forward pre-hook that records every module forward run without the model's lock held by the
    calling thread (two passes at once); returns the record and the hook's handle."""
    lock, offences = model_lock(model), []

    def check(module, inputs):
        if not lock.held():
            offences.append(f"{type(module).__name__} on {threading.current_thread().name}")

    return offences, nn.modules.module.register_module_forward_pre_hook(check)


def test_overlay_lands_while_a_ranking_runs_and_the_model_never_runs_twice_at_once():
    probe = demo_probe()
    before = fingerprint(probe.model)
    probe.top_images(0, 8, layer="relu2")  # the layer's first pass has run (the target's premise)
    probe.rank("activation", layer="relu2", progress=False)
    ranked = nw.RankedList(probe, method="activation", layer="relu2")
    overlay = nw.ActivationOverlay(probe, layer="relu2", unit=0, k=8)
    assert ranked.wait(60) and overlay.wait(60)
    offences, handle = passes_off_the_lock(probe.model)
    try:
        update(ranked, method="car")  # greedy CAR: a long ranking, with a yield point after every chunk
        deadline = time.monotonic() + 60
        while not ranked.progress and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ranked.status == "running" and ranked.progress, "the ranking never started"
        latencies = []
        for unit in (3, 5, 7):
            start = time.perf_counter()
            update(overlay, unit=unit)
            while overlay.shown.get("unit") != unit and time.perf_counter() - start < 60:
                time.sleep(0.002)
            latencies.append(time.perf_counter() - start)
            assert overlay.shown.get("unit") == unit and overlay.status == "idle"
            assert ranked.status == "running", "the ranking ended before the overlay landed: nothing was shown"
        print(f"[timing] demo overlay while ranking: {', '.join(f'{s:.3f} s' for s in latencies)}")
        custom(ranked, {"type": "cancel"})
        assert ranked.wait(60) and ranked.status == "cancelled"
    finally:
        handle.remove()
    assert offences == []
    assert_same(before, fingerprint(probe.model))


def test_a_click_gets_in_between_the_slices_of_the_sliders_evaluation(monkeypatch):
    """The slider's evaluation is interactive too, and its first one computes the layer's cut (a whole pass):
    a click's overlay does not wait for it, it gets the model at the evaluation's next slice."""
    from neuronwidgets.engine import slicing

    monkeypatch.setattr(slicing, "SLICE_SECONDS", 0.0)  # one image per slice
    probe = demo_probe(images=96, chunk_size=128, memory=0)  # no cut kept: every evaluation makes it again
    overlay = nw.ActivationOverlay(probe, layer="relu2", unit=0, k=4)
    assert overlay.wait(60)  # the layer's first pass
    panel = nw.AblationPanel(probe, layer="relu2", ranking=probe.rank("activation", layer="relu2", progress=False))
    assert panel.wait(60)
    slow = probe.model.conv1.register_forward_pre_hook(lambda module, args: time.sleep(0.02))
    try:
        update(panel, k=3)  # a new evaluation, which makes the cut of relu2 again
        deadline = time.monotonic() + 30
        while panel.status != "running" and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(0.2)
        latency = click(overlay, 5)
        still_running = panel.status == "running"
    finally:
        slow.remove()
    assert panel.wait(60) and panel.after.get("k") == 3
    print(f"[timing] overlay while the slider's evaluation runs: {latency:.3f} s (still running: {still_running})")
    assert still_running, "the overlay waited for the whole evaluation"


# -- Cancel ---------------------------------------------------------------------------------------------------


def test_hover_then_cancel_settles_the_list_at_cancelled():
    """The bug: a thumbnail request waiting behind the ranking made the cancelled ranking's settle step think
    a newer job of the list would settle the status, so it stayed "running" for good."""
    probe = demo_probe()
    ranked = nw.RankedList(probe, method="activation", layer="relu2")
    assert ranked.wait(60)
    update(ranked, method="car")
    deadline = time.monotonic() + 60
    while not ranked.progress and time.monotonic() < deadline:
        time.sleep(0.01)
    custom(ranked, {"type": "thumbnail", "unit": 1})
    custom(ranked, {"type": "thumbnail", "unit": 2})
    custom(ranked, {"type": "cancel"})
    assert ranked.wait(60)
    assert ranked.status == "cancelled" and ranked.progress == {} and ranked.error == ""
    assert not worker_for(probe).busy()


ACTIONS = ("hover", "click", "slider", "method", "cancel", "layer", "image")
METHODS = ("activation", "weight_l1", "taylor", "ablation", "car")
LAYERS = ("relu2", "relu3")


def random_action(explorer: nw.Explorer, rng: random.Random, log: list[str]) -> None:
    """One user action on the Explorer, as its front end sends it."""
    ranked, overlay, panel = explorer.ranked_list, explorer.overlay, explorer.panel
    action = rng.choice(ACTIONS)
    units = ranked.info.get("units")
    if action in ("hover", "click") and not units:
        action = "slider"  # no rows to point at before the first ranking lands
    if action == "hover":
        custom(ranked, {"type": "thumbnail", "unit": rng.randrange(units)})
    elif action == "click":
        update(ranked, selected_unit=rng.randrange(units))
    elif action == "slider":
        update(panel, k=rng.randrange(panel.units + 1))
    elif action == "method":
        update(ranked, method=rng.choice(METHODS))
    elif action == "cancel":
        custom(ranked, {"type": "cancel"})
    elif action == "layer":
        update(ranked, layer=rng.choice(LAYERS))
    else:
        update(overlay, image=rng.choice([None, rng.randrange(overlay.image_count)]))
    log.append(action)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_click_orders_always_settle(seed):
    probe = demo_probe(images=64, chunk_size=16)
    worker = worker_for(probe)
    worker.idle_seconds = 0.3
    threads_before = {t.ident for t in threading.enumerate()}
    before = fingerprint(probe.model)
    explorer = nw.Explorer(probe, method="activation")
    rng, log = random.Random(seed), []
    for _ in range(30):
        random_action(explorer, rng, log)
        time.sleep(rng.choice([0, 0, 0.01, 0.05, 0.2, 0.5]))
    assert explorer.wait(300), f"still busy after {log}"
    ranked, overlay, panel = explorer.ranked_list, explorer.overlay, explorer.panel
    cancelled_last = log[len(log) - 1 - log[::-1].index("cancel")] if "cancel" in log else None
    for widget in (ranked, overlay, panel):
        assert widget.status in ("idle", "cancelled"), (type(widget).__name__, widget.status, log)
        assert widget.progress == {} and widget.error == "", (type(widget).__name__, widget.error, log)
    assert overlay.status == panel.status == "idle"
    if ranked.status == "cancelled":
        assert cancelled_last is not None
    else:  # the list shows what its pickers say
        assert (ranked.info["method"], ranked.info["layer"]) == (ranked.method, ranked.layer)
    assert overlay.shown["unit"] == overlay.unit and overlay.shown["layer"] == overlay.layer
    assert panel.after == {} or panel.after["k"] == panel.k
    assert not worker.busy() and not worker.pending()
    deadline = time.monotonic() + 10
    while worker.threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    new = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    leaked = [t.name for t in new if t.name != "tqdm_monitor"]  # tqdm's one process-wide monitor
    assert leaked == [], leaked
    assert_same(before, fingerprint(probe.model))
    print(f"[random {seed}] {' '.join(log)} -> list {ranked.status}")


def click(overlay: nw.ActivationOverlay, unit: int, timeout: float = 120) -> float:
    """Seconds from a unit change sent as the front end sends it to that unit's overlay landing."""
    start = time.perf_counter()
    update(overlay, unit=unit)
    while overlay.shown.get("unit") != unit and time.perf_counter() - start < timeout:
        time.sleep(0.002)
    assert overlay.shown.get("unit") == unit
    return time.perf_counter() - start


@pytest.mark.slow
def test_resnet18_224_overlay_while_ranking():
    """The issue's figure: ResNet-18 (random weights, 1,000 classes) at 224² on the CPU, a unit click while an
    exact ablation of layer3 runs, once the overlay's layer has had its first pass. Prints the latencies."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    images = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # half the labels the model's own predictions, so the accuracy is not 0
        labels = torch.where(torch.arange(32) % 2 == 0, model(images).argmax(1), torch.arange(32) * 31)
    probe = nw.Probe(model, (images, labels), layer="layer3")  # one chunk: the model is lent within it
    before = fingerprint(model)
    start = time.perf_counter()
    probe.top_images(0, 8, layer="layer2")  # the layer's first pass
    first_pass = time.perf_counter() - start
    overlay = nw.ActivationOverlay(probe, layer="layer2", unit=0, k=8)
    deadline = time.monotonic() + 300
    while overlay.shown.get("unit") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    idle = [click(overlay, unit) for unit in (1, 2)]  # the same click with nothing else running
    ranked = nw.RankedList(probe, method="ablation", layer="layer3")
    deadline = time.monotonic() + 300
    while not ranked.progress and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ranked.status == "running" and ranked.progress, "the ranking never started"
    latencies = []
    for unit in (3, 5, 7):
        latencies.append(click(overlay, unit))
        assert ranked.status == "running"
    progress = dict(ranked.progress)
    custom(ranked, {"type": "cancel"})
    assert ranked.wait(300) and ranked.status == "cancelled"
    print(
        f"[timing] resnet18 224² first pass of layer2 (32 images): {first_pass:.2f} s; overlay while ablating "
        f"layer3: {', '.join(f'{s:.3f} s' for s in latencies)} (with no ranking: "
        f"{', '.join(f'{s:.3f} s' for s in idle)}); progress then {progress}"
    )
    assert_same(before, fingerprint(model))


def test_exit_while_a_ranking_runs_is_clean():
    """A script that ends while a widget's ranking runs on a worker thread exits with 0: the work is stopped at
    exit (a thread still inside torch while the interpreter shuts down aborts the process, exit code 134)."""
    import subprocess
    import sys

    script = (
        "import time, neuronwidgets as nw\n"
        "model, data = nw.demo.load()\n"
        "ranked = nw.RankedList(nw.Probe(model, data, layer='relu2', chunk_size=16), method='car')\n"
        "while not ranked.progress: time.sleep(0.01)\n"
        "print('ranking', flush=True)\n"
    )
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "ranking"

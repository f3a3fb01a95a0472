"""End to end in a real JupyterLab (issue 13, point 4): a training script in another process writes its
Monitor's snapshots to a logdir, and `MonitorView.from_logdir` in the notebook draws each one as it lands, with
the kernel idle (nothing runs in the notebook: a thread polls the directory), says "live" and then "finished",
and shows the logdir's name (markup in it included) as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_explorer import KERNEL_IDLE, rerun_cell
from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells

pytestmark = pytest.mark.e2e

SNAPSHOTS = 6  # the notebook's training script takes one per step, for 6 steps


def test_a_view_follows_a_script_through_its_logdir(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    in_own_notebook(follow_logdir, lab_page, jupyter_lab, artifacts)


def follow_logdir(page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    run_all_cells(page, jupyter_lab, "monitor_logdir.ipynb")
    cells = page.locator(NOTEBOOK).locator(".jp-Cell")
    view = cells.nth(1).locator(".nw-monitor")
    chart = view.locator(".nw-monitor-chart")
    expect(view).to_be_visible(timeout=90_000)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)

    seen = []  # (snapshots drawn, the subtitle) at each redraw while the script runs, the kernel idle
    while not seen or seen[-1][0] < SNAPSHOTS:
        drawn = int(chart.get_attribute("data-snapshots") or 0)
        if not seen or drawn != seen[-1][0]:
            seen.append((drawn, view.locator(".nw-subtitle").inner_text()))
            assert page.evaluate(KERNEL_IDLE), "the kernel was busy: the view must update without running a cell"
        assert len(seen) < 200
        page.wait_for_timeout(100)
    print(f"[logdir] snapshots drawn in turn: {[n for n, _ in seen]}")
    assert len({n for n, _ in seen if 0 < n < SNAPSHOTS}) >= 2, seen  # drawn one by one, not all at the end
    live = [subtitle for n, subtitle in seen if 0 < n < SNAPSHOTS]
    assert all("live: " in s and "run <b>1</b>" in s for s in live), live  # the logdir's name as text
    expect(view.locator(".nw-subtitle")).to_contain_text("finished: ", timeout=30_000)
    expect(view.locator(".nw-line")).to_have_count(8)  # the top 8 units of the last snapshot, one line each
    assert view.locator("b").count() == 0  # the markup in the logdir's name made no element
    view.screenshot(path=str(artifacts / "e2e_monitor_logdir.png"))
    rerun_cell(cells.nth(2), f"KERNEL snapshots={SNAPSHOTS} live=False returncode=0")
    assert not page.problems, page.problems

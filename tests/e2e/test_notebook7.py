"""End to end in Jupyter Notebook 7 (`jupyter notebook`) and headless Chromium: the Explorer on the demo model
renders, a click shows a unit's overlay, the ablation slider changes the accuracy, and the list keeps its keys:
with the list focused, ArrowDown/ArrowUp/End/Home/PageDown move the list's selection and not the notebook's
active cell (Notebook 7 runs its shortcuts before the page's own key handlers, JupyterLab after them), while the
notebook's other shortcuts still work."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from tests.e2e.test_explorer import KERNEL_IDLE

pytestmark = pytest.mark.e2e

VIEW_ROWS = 16  # js/ranked-list.js: rows in the list's viewport, what PageDown moves
# What the keyboard moved: the list's selected rank (rows carry a 0-based data-rank), the notebook's active cell,
# and whether the list still has the focus.
KEY_STATE = """(viewport) => ({
  rank: Number(viewport.querySelector('.nw-row[aria-selected="true"]')?.dataset.rank ?? -1),
  cell: window.jupyterapp.shell.currentWidget.content.activeCellIndex,
  focused: document.activeElement === viewport,
})"""


def test_explorer_in_notebook7(notebook_page, jupyter_notebook: dict, artifacts: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page = notebook_page
    start = time.perf_counter()
    page.goto(f"{jupyter_notebook['url']}/notebooks/explorer.ipynb?token={jupyter_notebook['token']}")
    page.wait_for_function("() => !!window.jupyterapp && window.jupyterapp.name", timeout=60_000)
    assert page.evaluate("window.jupyterapp.name") == "Jupyter Notebook"
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)
    print(f"[timing] notebook 7: open, kernel idle {time.perf_counter() - start:.1f}s")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    explorer = page.locator(".nw-explorer")
    ranked, overlay, panel = (explorer.locator(c) for c in (".nw-ranked-list", ".nw-overlay", ".nw-ablation"))
    expect(ranked.locator(".nw-title")).to_contain_text("ablation · layer relu3", timeout=90_000)
    expect(ranked.locator(".nw-badge")).to_be_hidden(timeout=60_000)
    expect(ranked.locator('.nw-row[data-rank="0"]')).to_be_visible()
    expect(panel.locator(".nw-title")).to_contain_text("ranked by ablation", timeout=30_000)
    expect(overlay.locator(".nw-tile")).to_have_count(8, timeout=30_000)
    rendered = time.perf_counter()
    print(f"[timing] notebook 7: run all to the ranked explorer {rendered - start:.1f}s")

    # a click on a unit: its overlay
    row = ranked.locator('.nw-row[data-rank="2"]')
    unit = row.get_attribute("data-unit")
    row.click()
    expect(overlay.locator(f'.nw-tiles[data-unit="{unit}"]')).to_be_visible(timeout=15_000)
    expect(row).to_have_attribute("aria-selected", "true")
    expect(overlay.locator(".nw-title")).to_contain_text(f"unit {unit} ")
    print(f"[timing] notebook 7: click to overlay {time.perf_counter() - rendered:.1f}s")

    # the keyboard stays in the list; the notebook's active cell does not move
    viewport = ranked.locator(".nw-list-viewport")
    units = int(panel.locator("input.nw-k").get_attribute("max"))
    cells = page.evaluate("window.jupyterapp.shell.currentWidget.content.widgets.length")
    assert units > VIEW_ROWS and cells > 1, (units, cells)  # so each key has somewhere to go, in both
    handle = viewport.element_handle()
    state = viewport.evaluate(KEY_STATE)
    assert state == {"rank": 2, "cell": 0, "focused": True}, state
    expected = [("ArrowDown", 3), ("ArrowUp", 2), ("End", units - 1), ("Home", 0), ("PageDown", VIEW_ROWS)]
    moves = []
    for key, rank in expected:
        page.keyboard.press(key)
        # the selection is drawn at once, in the page; give it a moment, then read what the key did
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(f"(v) => ({KEY_STATE})(v).rank === {rank}", arg=handle, timeout=2_000)
        moves.append((key, viewport.evaluate(KEY_STATE)))
    print(f"[keys] notebook 7: {moves}")
    assert [(key, s["rank"], s["cell"], s["focused"]) for key, s in moves] == [
        (key, rank, 0, True) for key, rank in expected
    ], f"the list's selection should move and the notebook's active cell (0) stay: {moves}"
    last_unit = ranked.locator(f'.nw-row[data-rank="{VIEW_ROWS}"]').get_attribute("data-unit")
    expect(overlay.locator(f'.nw-tiles[data-unit="{last_unit}"]')).to_be_visible(timeout=15_000)
    assert page.evaluate("window.jupyterapp.shell.currentWidget.content.widgets.length") == cells
    # the notebook's other shortcuts still work from the list: B inserts a cell below (taken out again)
    page.keyboard.press("b")
    page.wait_for_function(f"window.jupyterapp.shell.currentWidget.content.widgets.length === {cells + 1}")
    page.evaluate("window.jupyterapp.shell.currentWidget.content.model.sharedModel.deleteCell(1)")
    page.wait_for_function(f"window.jupyterapp.shell.currentWidget.content.widgets.length === {cells}")

    # the ablation slider changes the accuracy
    slider = panel.locator("input.nw-k")
    slider.evaluate("el => { el.value = '10'; el.dispatchEvent(new Event('input', { bubbles: true })); }")
    expect(panel.locator('.nw-after[data-k="10"]')).to_be_visible(timeout=30_000)
    expect(panel.locator(".nw-accuracy")).to_contain_text("10 units zeroed")
    before, after = panel.locator(".nw-before").inner_text(), panel.locator(".nw-after").inner_text()
    print(f"[ablation] notebook 7: accuracy {before} -> {after} with the top 10 units zeroed")
    assert before != after

    assert page.locator("img[src='x']").count() == 0  # class names with markup stayed text
    page.mouse.move(5, 500)  # no hover tooltip in the picture
    page.set_viewport_size({"width": 1400, "height": 1300})
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "notebook7-explorer.png"))
    print(f"[timing] notebook 7 test: {time.perf_counter() - start:.1f}s")
    assert not page.problems, page.problems

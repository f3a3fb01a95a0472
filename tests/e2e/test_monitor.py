"""End to end: notebooks/03_training.ipynb in JupyterLab; the MonitorView redraws while the training cell runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.test_explorer import KERNEL_IDLE

pytestmark = pytest.mark.e2e

TRAINING_CELL = 5  # the notebook's cell with the training loop
# Cells are read from the notebook model: JupyterLab only keeps the cells in view in the DOM.
HELPERS = """
window.nwCell = (i) => window.jupyterapp.shell.currentWidget.content.model.cells.get(i);
window.nwOutput = (i) => {
  const outputs = window.nwCell(i).outputs;
  let text = '';
  for (let k = 0; k < outputs.length; k++) {
    const o = outputs.get(k).toJSON();
    text += [].concat(o.text ?? '', (o.data && o.data['text/plain']) ?? '').join('');
  }
  return text;
};
"""
# Records every redraw of the chart with the training cell's execution state and output at that moment.
RECORD = """() => {
  window.nwDraws = [];
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.target.classList && m.target.classList.contains('nw-monitor-chart')) {
        window.nwDraws.push({
          updates: Number(m.target.dataset.updates),
          snapshots: Number(m.target.dataset.snapshots),
          state: window.nwCell(CELL).executionState,
          output: window.nwOutput(CELL),
        });
      }
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['data-updates'] });
}""".replace("CELL", str(TRAINING_CELL))


def test_monitor_view_updates_while_the_training_cell_runs(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page = lab_page
    start = time.perf_counter()
    page.goto(f"{jupyter_lab['url']}/lab/tree/03_training.ipynb?token={jupyter_lab['token']}")
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)
    # the workspace may restore the Explorer test's notebook: wait until this one is the current widget
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.context.path.endsWith('03_training.ipynb')", timeout=30_000
    )
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)
    page.evaluate(f"() => {{ {HELPERS} }}")
    assert page.evaluate(f"window.nwCell({TRAINING_CELL}).sharedModel.getSource().includes('monitor.step()')")
    page.evaluate(RECORD)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    chart = page.locator(".nw-monitor .nw-monitor-chart")
    page.wait_for_function(f"window.nwOutput({TRAINING_CELL}).includes('10 snapshots in')", timeout=180_000)
    print(f"[timing] open, run to the end of training: {time.perf_counter() - start:.1f}s")
    draws = page.evaluate("window.nwDraws")
    live = [d for d in draws if d["snapshots"] > 0 and d["state"] == "running" and "snapshots in" not in d["output"]]
    assert len({d["snapshots"] for d in live}) >= 2, draws  # two or more snapshots drawn while the cell ran
    expect(chart).to_have_attribute("data-snapshots", "10")
    expect(chart.locator(".nw-line")).to_have_count(6)
    view = page.locator(".nw-monitor")
    expect(view.locator(".nw-subtitle")).to_contain_text("step 100 · 10 snapshots every 10 steps")
    expect(view.locator(".nw-stability-text")).to_contain_text("last ")
    last = "window.jupyterapp.shell.currentWidget.content.model.cells.length - 1"
    page.wait_for_function(f"window.nwOutput({last}).includes('accuracy on the watched digits')", timeout=120_000)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(artifacts / "e2e_monitor.png"))
    print(f"[timing] live draws while the cell ran: {len(live)} ({len(draws)} in all)")
    assert not page.problems, page.problems

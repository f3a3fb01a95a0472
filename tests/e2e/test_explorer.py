"""End to end in a real JupyterLab and headless Chromium: the Explorer on the demo model, driven by clicks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

KERNEL_IDLE = (
    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
    " return !!k && k.status === 'idle'; }"
)
HTML_CLASS = "<img src=x onerror=alert(1)>"
HTML_LAYER = "<img src=x onerror=alert(2)>"


def _timed(label: str, timings: dict, action, wait) -> None:
    start = time.perf_counter()
    action()
    wait()
    timings[label] = round(time.perf_counter() - start, 3)
    print(f"[timing] {label}: {timings[label]:.3f} s")


def test_explorer_in_jupyterlab(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page = lab_page
    start = time.perf_counter()
    page.goto(f"{jupyter_lab['url']}/lab/tree/explorer.ipynb?token={jupyter_lab['token']}")
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)
    print(f"[timing] notebook open, kernel idle: {time.perf_counter() - start:.1f}s")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    explorer = page.locator(".nw-explorer")
    ranked = explorer.locator(".nw-ranked-list")
    overlay = explorer.locator(".nw-overlay")
    panel = explorer.locator(".nw-ablation")
    expect(ranked.locator(".nw-title")).to_contain_text("ablation · layer relu3", timeout=90_000)
    expect(ranked.locator(".nw-badge")).to_be_hidden(timeout=60_000)
    expect(panel.locator(".nw-title")).to_contain_text("ranked by ablation", timeout=30_000)
    expect(overlay.locator(".nw-tile")).to_have_count(8, timeout=30_000)
    timings: dict[str, float] = {}

    # select a unit: the overlay follows
    row = ranked.locator('.nw-row[data-rank="2"]')
    unit = row.get_attribute("data-unit")
    _timed(
        "select_to_overlay",
        timings,
        row.click,
        lambda: expect(overlay.locator(f'.nw-tiles[data-unit="{unit}"]')).to_be_visible(timeout=15_000),
    )
    expect(row).to_have_attribute("aria-selected", "true")
    expect(overlay.locator(".nw-title")).to_contain_text(f"unit {unit} ")
    expect(panel.locator(f'.nw-toggle.nw-selected[data-unit="{unit}"]')).to_be_visible()

    # keyboard: the next unit in ranked order
    next_unit = ranked.locator('.nw-row[data-rank="3"]').get_attribute("data-unit")
    page.keyboard.press("ArrowDown")
    expect(overlay.locator(f'.nw-tiles[data-unit="{next_unit}"]')).to_be_visible(timeout=15_000)

    # drag the ablation slider quickly: only the latest value counts
    slider = panel.locator("input.nw-k")

    def drag() -> None:
        slider.evaluate(
            "el => { for (let k = 1; k <= 10; k++) { el.value = String(k);"
            " el.dispatchEvent(new Event('input', { bubbles: true })); } }"
        )

    _timed(
        "slider_to_accuracy",
        timings,
        drag,
        lambda: expect(panel.locator('.nw-after[data-k="10"]')).to_be_visible(timeout=15_000),
    )
    expect(panel.locator(".nw-accuracy")).to_contain_text("10 units zeroed")
    expect(panel.locator(".nw-class-name").first).to_have_text(HTML_CLASS)

    # switch the method, then the class
    ranked.locator('select[aria-label="ranking method"]').select_option("activation")
    expect(ranked.locator(".nw-title")).to_contain_text("activation · layer relu3 · all classes", timeout=30_000)
    classes = ranked.locator('select[aria-label="class"]')
    expect(classes.locator("option").nth(1)).to_have_text(HTML_CLASS)
    classes.select_option(label="3")
    expect(ranked.locator(".nw-title")).to_contain_text("activation · layer relu3 · class 3", timeout=30_000)

    # a long ranking shows progress with an ETA, and cancels
    ranked.locator('select[aria-label="ranking method"]').select_option("car")
    progress = ranked.locator(".nw-progress")
    expect(progress).to_be_visible(timeout=10_000)
    expect(progress.locator(".nw-progress-label")).to_contain_text("left", timeout=30_000)
    page.screenshot(path=str(artifacts / "e2e_explorer_progress.png"))
    progress.locator(".nw-cancel").click()
    expect(ranked.locator(".nw-status")).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(ranked.locator(".nw-title")).to_contain_text("activation · layer relu3 · class 3")

    # HTML in a layer name is text too, and nothing was injected
    tiny = page.locator(".nw-ranked-list").nth(1)
    expect(tiny.locator(".nw-title")).to_contain_text(f"layer {HTML_LAYER}", timeout=30_000)
    assert page.locator("img[src='x']").count() == 0

    # kernel side: run the last cell in place and read what Python holds
    page.wait_for_function(KERNEL_IDLE, timeout=30_000)
    last = page.locator(".jp-Cell").nth(2)
    last.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    expect(last.locator(".jp-OutputArea-output")).to_contain_text(
        f"KERNEL selected={next_unit} overlay={next_unit} k=10 after_k=10 method=car target=3 status=cancelled",
        timeout=30_000,
    )
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_explorer.png"), full_page=True)
    (artifacts / "e2e-timings.json").write_text(json.dumps(timings, indent=2))
    assert not page.problems, page.problems

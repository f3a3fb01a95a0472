"""End to end in marimo: ``marimo run tests/e2e/marimo_app.py`` and headless Chromium. The Explorer, one
anywidget that renders its three views' models, works inside ``mo.ui.anywidget``: a click in the list moves the
overlay, the ablation slider changes the accuracy, and the cell that prints ``.value`` is re-run with the new
state; the single widgets render too; the widgets log no console errors or warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import free_port, stop, wait_ready

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parent / "marimo_app.py"
# Console messages from the widgets: anywidget loads our bundles from blob: URLs; our names start so.
WIDGET_MARKERS = ("blob:", "neuronwidgets", "anywidget", "nw-", "model not found")


@pytest.fixture(scope="module")
def marimo_app(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[str]:
    """``marimo run`` of the test app on 127.0.0.1 (no token, no update check, its config and caches in a
    temp dir: nothing touches $HOME); stopped by PID at the end. Yields its URL."""
    pytest.importorskip("marimo", reason="marimo is not installed (pip install -e '.[dev]')")
    home = tmp_path_factory.mktemp("marimo")
    env = {**os.environ, "MARIMO_SKIP_UPDATE_CHECK": "1"}
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        env[var] = str(home / var.lower())
    port = free_port()
    command = [sys.executable, "-m", "marimo", "run", str(APP), "--headless", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-token", "--no-sandbox", "--no-check"]
    log = open(artifacts / "marimo.log", "w")  # noqa: SIM115 (closed at teardown)
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health", proc, "marimo", timeout=60.0)
        print(f"[timing] marimo ready in {time.monotonic() - start:.1f}s")
        yield url
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def marimo_page(browser, marimo_app: str, artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """A fresh page; ``page.console`` collects console errors and warnings and uncaught errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.console = []
    page.on("console", lambda msg: page.console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: page.console.append(f"pageerror: {err}"))
    yield page
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        page.screenshot(path=str(artifacts / "failure-marimo.png"), full_page=True)
        print("\n".join(page.console[-40:]))
    context.close()


def test_explorer_in_marimo(marimo_page, marimo_app: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page = marimo_page
    start = time.perf_counter()
    page.goto(marimo_app)
    explorer = page.locator(".nw-explorer")
    ranked, overlay, panel = (explorer.locator(s) for s in (".nw-ranked-list", ".nw-overlay", ".nw-ablation"))
    value = page.get_by_text(re.compile("^EXPLORER VALUE"))
    expect(ranked.locator(".nw-title")).to_contain_text("activation · layer relu3", timeout=60_000)
    expect(overlay.locator(".nw-tile")).to_have_count(8, timeout=30_000)
    expect(panel.locator(".nw-title")).to_contain_text("ranked by activation", timeout=30_000)
    expect(value).to_contain_text("selected_unit=None k=0 method=activation layer=relu3", timeout=30_000)
    print(f"[timing] app open, Explorer ranked and shown: {time.perf_counter() - start:.1f}s")

    # a click in the list: the overlay follows, and the .value cell re-runs with the new unit
    row = ranked.locator('.nw-row[data-rank="2"]')
    unit = row.get_attribute("data-unit")
    start = time.perf_counter()
    row.click()
    expect(overlay.locator(f'.nw-tiles[data-unit="{unit}"]')).to_be_visible(timeout=15_000)
    expect(overlay.locator(".nw-title")).to_contain_text(f"unit {unit} ")
    expect(panel.locator(f'.nw-toggle.nw-selected[data-unit="{unit}"]')).to_be_visible()
    expect(value).to_contain_text(f"selected_unit={unit} k=0", timeout=15_000)
    print(f"[timing] click to overlay and .value: {time.perf_counter() - start:.1f}s")

    # the ablation slider: the accuracy changes, and .value has the new k
    accuracy = panel.locator(".nw-accuracy")
    before = accuracy.text_content()
    start = time.perf_counter()
    panel.locator("input.nw-k").evaluate(
        "el => { el.value = '10'; el.dispatchEvent(new Event('input', { bubbles: true })); }"
    )
    expect(panel.locator('.nw-after[data-k="10"]')).to_be_visible(timeout=15_000)
    expect(accuracy).to_contain_text("10 units zeroed")
    assert accuracy.text_content() != before
    expect(value).to_contain_text(f"selected_unit={unit} k=10", timeout=15_000)
    print(f"[timing] slider to accuracy and .value: {time.perf_counter() - start:.1f}s")

    # a method picked in the list re-ranks all three views, and .value follows
    ranked.locator('select[aria-label="ranking method"]').select_option("weight_l1")
    expect(ranked.locator(".nw-title")).to_contain_text("weight_l1 · layer relu3", timeout=30_000)
    expect(value).to_contain_text("method=weight_l1", timeout=15_000)

    # the single widgets render in mo.ui.anywidget too; HTML in a class name stayed text
    expect(page.locator(".nw-ranked-list").nth(1).locator(".nw-title")).to_contain_text("weight_l1", timeout=30_000)
    expect(page.locator(".nw-overlay").nth(1).locator(".nw-tile")).to_have_count(4, timeout=30_000)
    expect(page.locator(".nw-ablation").nth(1).locator(".nw-title")).to_contain_text("ranked by", timeout=30_000)
    assert explorer.count() == 1 and page.locator(".nw-ranked-list").count() == 2  # the Explorer's, the single
    assert page.locator("img[src='x']").count() == 0

    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "marimo-explorer.png"), full_page=True)
    problems = [line for line in page.console if line.startswith("pageerror")]
    problems += [
        line
        for line in page.console
        if line.startswith(("error", "warning")) and any(m in line.lower() for m in WIDGET_MARKERS)
    ]
    noted = [line for line in page.console if line.startswith(("error", "warning", "pageerror"))]
    print(f"[console] {len(page.console)} messages; errors and warnings: {noted}")
    assert not problems, problems

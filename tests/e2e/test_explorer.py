"""End to end in a real JupyterLab and headless Chromium: the Explorer on the demo model, driven by clicks;
its saved output keeps the last state; light and dark themes keep its text readable."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests.e2e.contrast import CONTRAST

pytestmark = pytest.mark.e2e

KERNEL_IDLE = (
    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
    " return !!k && k.status === 'idle'; }"
)
# The image/png in the Explorer's output (cell 0) as the notebook model holds it now: what a save writes.
OUTPUT_PNG = """() => {
  const outputs = window.jupyterapp.shell.currentWidget.content.model.cells.get(0).outputs;
  for (let i = 0; i < outputs.length; i++) {
    const data = outputs.get(i).toJSON().data;
    if (data && data['image/png']) return data['image/png'];
  }
  return null;
}"""
PICTURE_CHANGED = f"(before) => ({OUTPUT_PNG})() !== before"
# How many views of the Explorer JupyterLab's widget renderer holds (it adds one per output update).
RENDERED_VIEWS = """() => {
  const area = window.jupyterapp.shell.currentWidget.content.widgets[0].outputArea;
  const renderers = area.widgets.flatMap((child) => (child.widgets || []).filter((w) => 'renderModel' in w));
  return renderers.map((r) => r.widgets.length);
}"""
RUN_IN_KERNEL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  await kernel.requestExecute({ code }).done;
}"""
SHOW_STATUS = """
ranked = explorer.ranked_list
shown_info = ranked.info
ranked.progress = {"description": "greedy CAR", "done": 20, "total": 64, "elapsed": 3.0, "eta": 6.6}
ranked.info = {**shown_info, "provisional": True, "estimate_for": "car"}
ranked.status = "running"
explorer.panel.report("an error shows like this")
"""
HIDE_STATUS = "ranked.status, ranked.progress, ranked.info = 'cancelled', {}, shown_info"
MIN_CONTRAST = 4.5  # WCAG AA for normal text
# Long tasks (main-thread tasks of 50 ms or more, the browser's own measure of jank) from here on, and the
# slider's input events. Installed before the drag; buffered, so none is lost to the observer's start.
WATCH_DRAG = """(slider) => {
  window.nwLongTasks = [];
  window.nwInputs = 0;
  slider.addEventListener('input', () => { window.nwInputs += 1; });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.nwLongTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: 'longtask', buffered: true });
}"""
LONG_TASK_MS = 50  # the browser's "long task": reported
# the drag fails on a task this long: past 100 ms a response to input is perceptibly late (RAIL). Between the
# two, a task comes and goes with the load of this shared 2-core machine (one of 58 ms in one CI run of many)
JANK_MS = 100
DRAG_SECONDS = 2.0
SWEEP_SECONDS = 0.5  # one pass across the slider; the drag goes back and forth
HTML_CLASS = "<img src=x onerror=alert(1)>"
HTML_LAYER = "<img src=x onerror=alert(2)>"


SHOWN = "([root, sel]) => [...root.querySelectorAll(sel)].some((el) => el.getClientRects().length > 0)"
SHOWN_AT = f"(args) => ({SHOWN})(args) && performance.now()"
MARK_POINTER_DOWN = """() => {
  window.nwPointerDownAt = null;
  document.addEventListener('pointerdown', () => { window.nwPointerDownAt = performance.now(); },
                            { capture: true, once: true });
}"""


def appeared(within, selector: str, timeout: float = 15_000) -> float:
    """Wait until ``selector`` matches a visible element inside the locator ``within``, checking on every
    animation frame (`expect` re-checks after 100, 250, 500 and 1,000 ms, which rounds a latency up by as
    much); returns the page's `performance.now()` then, in ms."""
    shown = within.page.wait_for_function(
        SHOWN_AT, arg=[within.element_handle(), selector], polling="raf", timeout=timeout
    )
    return float(shown.json_value())


def click_to_shown(target, within, selector: str, timeout: float = 15_000) -> float:
    """Seconds from the press on ``target`` (the page's own pointerdown time) to ``selector`` shown inside
    ``within``: what the user waits for, without Playwright's checks before it clicks."""
    page = target.page
    page.evaluate(MARK_POINTER_DOWN)
    target.click()
    shown = appeared(within, selector, timeout)
    return (shown - page.evaluate("window.nwPointerDownAt")) / 1000


def _clicked(label: str, timings: dict, target, within, selector: str) -> None:
    timings[label] = round(click_to_shown(target, within, selector), 3)
    print(f"[timing] {label}: {timings[label]:.3f} s")


def rerun_cell(cell, expected: str, idle_timeout: float = 60_000) -> None:
    """Once the kernel is idle, run the notebook cell ``cell`` (a locator) in place and wait for ``expected``
    in its output: what Python holds, as the cell prints it."""
    from playwright.sync_api import expect

    cell.page.wait_for_function(KERNEL_IDLE, timeout=idle_timeout)
    cell.locator(".jp-InputArea-editor").click()
    cell.page.keyboard.press("Control+Enter")
    expect(cell.locator(".jp-OutputArea-output")).to_contain_text(expected, timeout=30_000)


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
    page.wait_for_function(f"({OUTPUT_PNG})() !== null")
    first_picture = page.evaluate(OUTPUT_PNG)
    timings: dict[str, float] = {}

    # select a unit: the overlay follows
    row = ranked.locator('.nw-row[data-rank="2"]')
    unit = row.get_attribute("data-unit")
    _clicked("select_to_overlay", timings, row, overlay, f'.nw-tiles[data-unit="{unit}"]')
    expect(row).to_have_attribute("aria-selected", "true")
    expect(overlay.locator(".nw-title")).to_contain_text(f"unit {unit} ")
    expect(panel.locator(f'.nw-toggle.nw-selected[data-unit="{unit}"]')).to_be_visible()

    # keyboard: the next unit in ranked order
    next_unit = ranked.locator('.nw-row[data-rank="3"]').get_attribute("data-unit")
    page.keyboard.press("ArrowDown")
    expect(overlay.locator(f'.nw-tiles[data-unit="{next_unit}"]')).to_be_visible(timeout=15_000)

    # drag the ablation slider with the mouse for 2 s: the page stays smooth (no long task), the last value counts
    slider = panel.locator("input.nw-k")
    smooth = drag_for_two_seconds(page, panel, slider, timings, artifacts)

    # drag the ablation slider quickly: only the latest value counts

    def drag() -> None:
        slider.evaluate(
            "el => { for (let k = 1; k <= 10; k++) { el.value = String(k);"
            " el.dispatchEvent(new Event('input', { bubbles: true })); } }"
        )

    _timed(
        "slider_to_accuracy",
        timings,
        drag,
        lambda: appeared(panel, '.nw-after[data-k="10"]'),
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
    # a click during the ranking, at once: its overlay does not wait for the ranking (issue 10, point 3)
    busy_row = ranked.locator('.nw-row[data-rank="4"]')
    busy_unit = busy_row.get_attribute("data-unit")
    _clicked("select_to_overlay_while_ranking", timings, busy_row, overlay, f'.nw-tiles[data-unit="{busy_unit}"]')
    timings["ranking_still_running_when_overlay_landed"] = progress.is_visible()
    print(f"[timing] ranking still running when the overlay landed: {progress.is_visible()}")
    page.screenshot(path=str(artifacts / "e2e_explorer_progress.png"))
    # hover a row (a thumbnail request), then Cancel: the list settles at cancelled (issue 10, point 4). Greedy
    # CAR on the demo takes 2-6 s here, so it may end before Cancel is pressed, or after the press but before the
    # kernel reads the cancel: then the list settles at idle, with the finished ranking shown
    ranked.locator('.nw-row[data-rank="5"]').hover()
    pressed = True
    try:
        progress.locator(".nw-cancel").click(timeout=2_000)
    except Exception:  # playwright's TimeoutError: the ranking ended first
        pressed = False
    status = ranked.locator(".nw-status")
    expect(status).to_have_attribute("data-status", re.compile("^(cancelled|idle)$"), timeout=15_000)
    final_status = status.get_attribute("data-status")
    if not pressed:
        assert final_status == "idle", "no Cancel was pressed, yet the ranking was cancelled"
    timings["cancel_pressed"], timings["cancel_took_effect"] = pressed, final_status == "cancelled"
    print(f"[timing] Cancel pressed while the ranking ran: {pressed}; it took effect: {final_status == 'cancelled'}")
    if final_status == "idle":
        ranked.locator('select[aria-label="ranking method"]').select_option("activation")
    expect(ranked.locator(".nw-title")).to_contain_text("activation · layer relu3 · class 3")

    # HTML in a layer name is text too, and nothing was injected
    tiny = page.locator(".nw-ranked-list").nth(1)
    expect(tiny.locator(".nw-title")).to_contain_text(f"layer {HTML_LAYER}", timeout=30_000)
    assert page.locator("img[src='x']").count() == 0

    # kernel side: run the last cell in place and read what Python holds
    rerun_cell(
        page.locator(".jp-Cell").nth(2),
        f"KERNEL selected={busy_unit} overlay={busy_unit} k=10 after_k=10 "
        f"method={'car' if final_status == 'cancelled' else 'activation'} target=3 status={final_status}",
        idle_timeout=30_000,
    )
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_explorer.png"), full_page=True)
    assert_readable(page, "JupyterLab Light")

    survives_the_picture_refresh(page, explorer, timings)
    dark_theme(page, explorer, artifacts)
    saved_picture_is_the_last_state(page, jupyter_lab["root"], first_picture, timings)
    static_picture(page, jupyter_lab, artifacts)
    (artifacts / "e2e-timings.json").write_text(json.dumps(timings, indent=2))
    assert not page.problems, page.problems
    assert smooth["longest_ms"] < JANK_MS, (
        f"{len(smooth['long'])} long tasks during the 2 s slider drag, the longest {smooth['longest_ms']:.0f} ms"
        f" (none of {JANK_MS} ms or more allowed): {smooth['long']}"
    )


def drag_for_two_seconds(page, panel, slider, timings: dict, artifacts: Path) -> dict:
    """Mouse down on the slider's left end, then moves back and forth across it for DRAG_SECONDS, each move as
    soon as the page took the last (a storm of input events, as many as the page keeps up with), mouse up; the
    kernel's answer for the last value lands. Measures the long tasks whose time overlaps the moves (and, apart,
    the press's, and those after the drag until the answer landed); records them in the timings and in
    test-artifacts/e2e-timings.log. A plain range input in the same page takes about 100 moves in the 2 s."""
    from playwright.sync_api import expect

    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y, left, right = box["y"] + box["height"] / 2, box["x"] + 2, box["x"] + box["width"] - 2
    slider.evaluate(WATCH_DRAG)
    page.mouse.move(left, y)
    t0 = page.evaluate("performance.now()")
    page.mouse.down()  # JupyterLab's own mousedown in a cell (focus, cell activation) is timed apart
    pressed = page.evaluate("performance.now()")
    start, moves = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < DRAG_SECONDS:
        phase = (elapsed / SWEEP_SECONDS) % 2
        page.mouse.move(left + (right - left) * (phase if phase <= 1 else 2 - phase), y)
        moves += 1
    page.mouse.up()
    t1 = page.evaluate("performance.now()")
    k = slider.input_value()
    expect(panel.locator(f'.nw-after[data-k="{k}"]')).to_be_visible(timeout=30_000)
    landed = time.perf_counter() - start - DRAG_SECONDS
    page.wait_for_timeout(100)  # the observer's last entries
    tasks, inputs = page.evaluate("[window.nwLongTasks, window.nwInputs]")
    press = [t for t in tasks if t["start"] < pressed and t["start"] + t["duration"] > t0]
    during = [t for t in tasks if t["start"] < t1 and t["start"] + t["duration"] > pressed]
    after = [t for t in tasks if t["start"] >= t1]
    long = [round(t["duration"], 1) for t in during if t["duration"] >= LONG_TASK_MS]
    longest = max((t["duration"] for t in during), default=0.0)
    figures = {
        "drag_mouse_moves": moves,
        "drag_input_events": inputs,
        "drag_press_long_task_ms": round(max((t["duration"] for t in press), default=0.0), 1),
        "drag_long_tasks": len(during),
        "drag_longest_task_ms": round(longest, 1),
        "drag_long_tasks_after_until_answer": len(after),
        "drag_longest_task_after_ms": round(max((t["duration"] for t in after), default=0.0), 1),
        "drag_last_k_answer_s": round(landed, 3),
    }
    timings.update(figures)
    line = " ".join(f"{name}={value}" for name, value in figures.items())
    print(f"[timing] slider drag {DRAG_SECONDS:.0f} s to k={k}: {line}")
    with open(artifacts / "e2e-timings.log", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} test_explorer slider drag {DRAG_SECONDS:.0f} s: {line}\n")
    # a janky page takes fewer moves (each waits for the page): the count is a figure, the long tasks the check
    assert inputs >= 1, "the drag did not move the slider"
    return {"long": long, "longest_ms": longest}


def survives_the_picture_refresh(page, explorer, timings: dict) -> None:
    """The kernel re-sends the output with a new picture after a change; JupyterLab builds a new view for
    it, which takes over the old DOM: same elements, scroll position and focus; the keyboard still works."""
    from playwright.sync_api import expect

    ranked, overlay = explorer.locator(".nw-ranked-list"), explorer.locator(".nw-overlay")
    viewport = ranked.locator(".nw-list-viewport")
    views_before = page.evaluate(RENDERED_VIEWS)
    before = page.evaluate(OUTPUT_PNG)
    _timed(
        "select_to_saved_picture",
        timings,
        ranked.locator('.nw-row[data-rank="4"]').click,
        lambda: page.wait_for_function(PICTURE_CHANGED, arg=before, timeout=30_000),
    )
    viewport.evaluate("el => { el.nwMark = 'same element'; }")
    viewport.evaluate("el => { el.scrollTop = 30; }")
    page.wait_for_timeout(100)  # let the scroll event fire
    before = page.evaluate(OUTPUT_PNG)
    next_unit = ranked.locator('.nw-row[data-rank="5"]').get_attribute("data-unit")
    page.keyboard.press("ArrowDown")
    expect(overlay.locator(f'.nw-tiles[data-unit="{next_unit}"]')).to_be_visible(timeout=15_000)
    page.wait_for_function(PICTURE_CHANGED, arg=before, timeout=30_000)
    views_after = page.evaluate(RENDERED_VIEWS)
    print(f"[views] JupyterLab's widget renderer held {views_before} views, now {views_after}")
    assert viewport.evaluate("el => [el.nwMark, el.scrollTop, document.activeElement === el]") == [
        "same element",
        30,
        True,
    ]
    after_next = ranked.locator('.nw-row[data-rank="6"]').get_attribute("data-unit")
    page.keyboard.press("ArrowDown")
    expect(ranked.locator('.nw-row[data-rank="6"]')).to_have_attribute("aria-selected", "true")
    expect(overlay.locator(f'.nw-tiles[data-unit="{after_next}"]')).to_be_visible(timeout=15_000)


def dark_theme(page, explorer, artifacts: Path) -> None:
    """Under JupyterLab Dark, with progress, an estimate badge and an error showing, all text stays readable."""
    from playwright.sync_api import expect

    ranked, panel = explorer.locator(".nw-ranked-list"), explorer.locator(".nw-ablation")
    set_theme(page, "JupyterLab Dark")
    # The strip as a long ranking shows it, set from the kernel: the demo model ranks too fast to look at.
    page.evaluate(RUN_IN_KERNEL, SHOW_STATUS)
    expect(ranked.locator(".nw-progress")).to_be_visible(timeout=15_000)
    expect(ranked.locator(".nw-badge")).to_be_visible(timeout=15_000)
    expect(panel.locator(".nw-error-text")).to_have_text("an error shows like this", timeout=15_000)
    ranked.locator('.nw-row[data-rank="2"]').hover()
    expect(ranked.locator(".nw-tip")).to_be_visible()
    assert_readable(page, "JupyterLab Dark")
    page.set_viewport_size({"width": 1400, "height": 1700})
    explorer.evaluate("el => el.scrollIntoView()")
    page.screenshot(path=str(artifacts / "e2e_explorer_dark.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    panel.locator(".nw-dismiss").click()
    expect(panel.locator(".nw-error")).to_be_hidden(timeout=15_000)
    page.evaluate(RUN_IN_KERNEL, HIDE_STATUS)
    expect(ranked.locator(".nw-progress")).to_be_hidden(timeout=15_000)
    set_theme(page, "JupyterLab Light")


def set_theme(page, theme: str) -> None:
    page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', { theme })", theme)
    page.wait_for_function("(theme) => document.body.dataset.jpThemeName === theme", arg=theme, timeout=20_000)


def assert_readable(page, theme: str) -> None:
    measured = page.evaluate(CONTRAST, ".nw-explorer")
    worst = min(measured, key=lambda m: m["ratio"])
    print(f"[contrast] {theme}: {len(measured)} texts, lowest {worst['ratio']} ({worst['cls']}: {worst['text']!r})")
    poor = [m for m in measured if m["ratio"] < MIN_CONTRAST]
    assert not poor, f"{theme}: text below {MIN_CONTRAST}:1 contrast: {poor}"


def saved_picture_is_the_last_state(page, root: Path, first_picture: str, timings: dict) -> None:
    """Saving writes the output's image/png: once the state settles it is the kernel's picture of it."""
    page.evaluate(RUN_IN_KERNEL, "explorer.wait(); open('explorer_now.png', 'wb').write(explorer.snapshot_png())")
    now = Image.open(root / "explorer_now.png").convert("RGB")
    start = time.perf_counter()
    while True:
        # what Ctrl+S does, awaited to the end: the server writes the file in place, so a read during a save
        # could see it half-written
        page.evaluate("() => window.jupyterapp.shell.currentWidget.context.save()")
        saved = json.loads((root / "explorer.ipynb").read_text())
        (encoded,) = [o["data"]["image/png"] for o in saved["cells"][0]["outputs"] if "image/png" in o.get("data", {})]
        picture = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
        if picture.size == now.size and ImageChops.difference(picture, now).getbbox() is None:
            break
        assert time.perf_counter() - start < 30, "the saved picture never showed the last state"
        page.wait_for_timeout(500)
    timings["saved_picture_is_last_state"] = round(time.perf_counter() - start, 3)
    assert encoded != first_picture


def static_picture(page, jupyter_lab: dict, artifacts: Path) -> None:
    """Without a kernel, the saved notebook (here its HTML export by the server) shows the picture."""
    page.goto(f"{jupyter_lab['url']}/nbconvert/html/explorer.ipynb?download=false&token={jupyter_lab['token']}")
    picture = page.locator('img[src^="data:image/png"]').first
    picture.wait_for(timeout=30_000)
    saved = Image.open(jupyter_lab["root"] / "explorer_now.png")
    assert picture.evaluate("img => [img.naturalWidth, img.naturalHeight]") == list(saved.size)
    page.screenshot(path=str(artifacts / "e2e_static_picture.png"), full_page=True)

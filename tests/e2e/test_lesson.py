"""End to end: the lesson (notebooks/02_teach.ipynb) run top to bottom in a real JupyterLab and in Notebook 7.
Its widgets draw; exercises 2 and 3 are done with the widgets alone (a unit typed into the overlay, a unit
without a toggle toggled off by its number in the panel; section 6's red unit toggled off in the shapes
model's panel); no answer shows until its button is pressed, and a
pressed button shows that answer below it (the answers are `nw.Reveal`: ipywidgets' Button and Output)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.test_exercise_widgets import quiet
from tests.e2e.test_explorer import KERNEL_IDLE
from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells

pytestmark = pytest.mark.e2e

LESSON = "02_teach.ipynb"
REVEALS = ["1", "2", "2b", "3", "4", "5", "6", "7"]  # the exercises, in the order of their answer buttons
SHOW = "Show the answer"
ANSWER_3 = "matters most for class 3"  # what the answer to exercise 3 prints first
RED_UNIT = "19"  # the shapes model's red unit in section 6 (tests/test_teach.py checks the lesson says so)


def pressed(page, button):
    """Press an answer's button; returns its Reveal (the box of the button and its output), marked so that it
    is still found once the button no longer says "Show the answer"."""
    button.scroll_into_view_if_needed()
    button.evaluate("el => { el.closest('.widget-vbox').dataset.testReveal = 'pressed'; }")
    button.click()
    return page.locator('.widget-vbox[data-test-reveal="pressed"]')


def test_lesson_in_jupyterlab(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    in_own_notebook(lesson_in_jupyterlab, lab_page, jupyter_lab, artifacts)


def lesson_in_jupyterlab(page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    start = run_all_cells(page, jupyter_lab, LESSON)
    notebook = page.locator(NOTEBOOK)
    buttons = notebook.locator("button", has_text=SHOW)
    expect(buttons).to_have_count(len(REVEALS), timeout=180_000)
    page.wait_for_function(KERNEL_IDLE, timeout=180_000)  # every cell has run
    print(f"[timing] lesson in JupyterLab: run all to idle {time.perf_counter() - start:.1f} s")
    expect(notebook.locator(".nw-overlay")).to_have_count(2)
    expect(notebook.locator(".nw-overlay").first.locator(".nw-tile")).to_have_count(8, timeout=60_000)
    expect(notebook.locator(".nw-ablation")).to_have_count(2)  # the digits model's (section 3), the shapes model's (6)
    for title in notebook.locator(".nw-ablation .nw-title").all():
        expect(title).to_contain_text("ranked by ablation", timeout=60_000)
    assert ANSWER_3 not in notebook.inner_text()  # nothing of the answer before its button

    # exercise 2 with the widget alone: a unit typed into the overlay's field, and its tiles come
    overlay = notebook.locator(".nw-overlay").first
    quiet(page)
    field = overlay.locator("input.nw-unit")
    field.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("12")
    page.keyboard.press("Enter")
    expect(overlay.locator('.nw-tiles[data-unit="12"] .nw-tile')).to_have_count(8, timeout=30_000)
    overlay.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_lesson_overlay.png"))

    # exercise 3: the correlation ranking's top unit (14, far down the class-3 ablation ranking, so without a
    # toggle of its own) toggled off by its number; class 3's accuracy changes
    panel = notebook.locator(".nw-ablation").first
    expect(panel.locator('.nw-toggle[data-unit="14"]')).to_have_count(0)
    after = panel.locator(".nw-accuracy .nw-after")
    expect(after).to_have_text(re.compile(r"^\d+\.\d%$"), timeout=60_000)  # the panel's first evaluation
    before_text = after.text_content()  # nothing ablated yet (innerText is empty while the cell is out of view)
    quiet(page)
    panel.locator("input.nw-toggle-unit").click()
    page.keyboard.type("14")
    page.keyboard.press("Enter")
    expect(panel.locator('.nw-extra .nw-chip[data-unit="14"]')).to_be_visible(timeout=30_000)
    expect(after).not_to_have_text(before_text, timeout=30_000)
    print(f"[lesson] accuracy without unit 14: {before_text} -> {after.text_content()}")
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_lesson_panel.png"))

    # exercise 7 with the widget alone: the red unit toggled off by its number; the shapes model keeps 100%
    shapes_panel = notebook.locator(".nw-ablation").nth(1)
    shapes_panel.scroll_into_view_if_needed()
    quiet(page)
    shapes_panel.locator("input.nw-toggle-unit").click()
    page.keyboard.type(RED_UNIT)
    page.keyboard.press("Enter")
    expect(shapes_panel.locator(f'.nw-toggle[data-unit="{RED_UNIT}"] input')).to_be_checked(timeout=30_000)
    expect(shapes_panel.locator(".nw-accuracy")).to_contain_text("1 unit zeroed", timeout=30_000)
    expect(shapes_panel.locator(".nw-accuracy .nw-after")).to_have_text("100.0%")
    page.screenshot(path=str(artifacts / "e2e_lesson_shapes_panel.png"))

    # exercise 3's answer: pressed, it shows below its button, and only it
    reveal = pressed(page, buttons.nth(REVEALS.index("3")))
    expect(reveal).to_contain_text(ANSWER_3, timeout=60_000)
    expect(reveal.locator("button")).to_have_text("Answer")
    expect(reveal.locator("button")).to_be_disabled()
    expect(notebook.locator("button", has_text=SHOW)).to_have_count(len(REVEALS) - 1)
    print(f"[lesson] exercise 3's answer: {reveal.inner_text()[:200]!r}")
    reveal.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_lesson_answer.png"))


def test_lesson_answers_in_notebook7(notebook_page, jupyter_notebook: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page = notebook_page
    page.goto(f"{jupyter_notebook['url']}/notebooks/{LESSON}?token={jupyter_notebook['token']}")
    page.wait_for_function("() => !!window.jupyterapp && window.jupyterapp.name", timeout=60_000)
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    buttons = page.locator("button", has_text=SHOW)
    expect(buttons).to_have_count(len(REVEALS), timeout=180_000)
    page.wait_for_function(KERNEL_IDLE, timeout=180_000)
    assert ANSWER_3 not in page.locator(".jp-Notebook").inner_text()
    reveal = pressed(page, buttons.nth(REVEALS.index("3")))
    expect(reveal).to_contain_text(ANSWER_3, timeout=60_000)
    reveal.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_lesson_notebook7.png"))
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")

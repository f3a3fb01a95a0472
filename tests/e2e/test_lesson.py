"""End to end: the lesson (notebooks/02_teach.ipynb) run top to bottom in a real JupyterLab and in Notebook 7.
Its widgets draw, no answer shows until its button is pressed, and a pressed button shows that answer below it
(the answers are `nw.Reveal`: ipywidgets' Button and Output, so both front ends draw them the same way)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.test_explorer import KERNEL_IDLE
from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells

pytestmark = pytest.mark.e2e

LESSON = "02_teach.ipynb"
REVEALS = ["1", "2", "2b", "3", "4", "5"]  # the exercises, in the order of their answer buttons
SHOW = "Show the answer"
ANSWER_3 = "matters most for class 3"  # what the answer to exercise 3 prints first


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
    expect(notebook.locator(".nw-ablation .nw-title")).to_contain_text("ranked by ablation", timeout=60_000)
    assert ANSWER_3 not in notebook.inner_text()  # nothing of the answer before its button
    panel = notebook.locator(".nw-ablation")
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e_lesson_panel.png"))

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

"""End to end in a real JupyterLab: the widgets the lesson's exercises need, on their own (issue 15, point 2).
The overlay picks a unit by its number (typed, then the next button) and the tiles follow; typed text that is
no unit is refused beside the field; an ablation panel toggles a unit that has no toggle (the correlation
ranking's top unit, far down the class-3 ablation ranking) by its number and the accuracy changes; an overlay
that follows a ranked list shows the unit of the row clicked; the overlay switched to contribution mode shows
a class's top images by the unit's contribution."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.contrast import CONTRAST
from tests.e2e.test_explorer import MIN_CONTRAST, rerun_cell
from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells, settled

pytestmark = pytest.mark.e2e

TOGGLES = 16  # js/ablation-panel.js: the ranking's top units have a toggle
# every output's image/png in this notebook, as the notebook model holds them now
OUTPUT_PNGS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const pictures = [];
  for (let c = 0; c < cells.length; c++) {
    const outputs = cells.get(c).outputs;
    for (let i = 0; outputs && i < outputs.length; i++) {
      const data = outputs.get(i).toJSON().data;
      if (data && data['image/png']) pictures.push(data['image/png'].length + ':' + data['image/png'].slice(-64));
    }
  }
  return pictures.join('|');
}"""
REFRESH_DELAY_MS = 2000  # neuronwidgets/widgets/_picture.py REFRESH_DELAY: a picture is re-sent this long after


def quiet(page, quiet_ms: int = REFRESH_DELAY_MS + 1000) -> None:
    """Wait until no output's picture changed for longer than the kernel waits before re-sending one
    (`settled`, over every output of the notebook)."""
    settled(page, quiet_ms, OUTPUT_PNGS)


def assert_readable(page, selector: str) -> None:
    """Every text shown under ``selector`` (the refusals and chips among them) has WCAG AA contrast."""
    measured = page.evaluate(CONTRAST, selector)
    poor = [m for m in measured if m["ratio"] < MIN_CONTRAST]
    worst = min(measured, key=lambda m: m["ratio"])
    print(f"[contrast] {selector}: {len(measured)} texts, lowest {worst['ratio']} ({worst['cls']}: {worst['text']!r})")
    assert not poor, f"text below {MIN_CONTRAST}:1 contrast: {poor}"


def test_exercise_widgets_on_their_own(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    in_own_notebook(exercise_widgets, lab_page, jupyter_lab, artifacts)


def exercise_widgets(page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    run_all_cells(page, jupyter_lab, "exercise_widgets.ipynb")
    notebook = page.locator(NOTEBOOK)
    cells = notebook.locator(".jp-Cell")
    overlay = cells.nth(0).locator(".nw-overlay")
    expect(overlay.locator('.nw-tiles[data-unit="0"] .nw-tile')).to_have_count(4, timeout=90_000)
    panel = cells.nth(1).locator(".nw-ablation")
    expect(panel.locator(".nw-title")).to_contain_text("ranked by ablation", timeout=90_000)
    found = re.search(r"UNIT (\d+) RANK (\d+)", cells.nth(1).locator(".jp-OutputArea-output").first.inner_text())
    assert found, "cell 1 did not print the unit"
    unit, rank = int(found.group(1)), int(found.group(2))
    print(f"[exercise] the correlation ranking's top unit {unit} is rank {rank} in the class-3 ablation ranking")
    assert rank > TOGGLES
    followed = cells.nth(2).locator(".nw-overlay")
    expect(followed.locator(".nw-tile")).to_have_count(4, timeout=60_000)
    cell_count = cells.count()

    # the overlay on its own: type a unit, Enter; the tiles are that unit's
    field = overlay.locator('input.nw-unit[aria-label="unit number"]')
    expect(field).to_have_value("0")
    expect(overlay.locator(".nw-unit-range")).to_have_text("0–31")
    first_images = overlay.locator(".nw-tile").evaluate_all("els => els.map((el) => el.dataset.index)")
    quiet(page)
    field.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("7")
    page.keyboard.press("Enter")
    expect(overlay.locator('.nw-tiles[data-unit="7"] .nw-tile')).to_have_count(4, timeout=30_000)
    expect(overlay.locator(".nw-title")).to_have_text("unit 7 · layer relu2 · top 4 images")
    seven_images = overlay.locator(".nw-tile").evaluate_all("els => els.map((el) => el.dataset.index)")
    print(f"[exercise] top images of unit 0: {first_images}, of unit 7: {seven_images}")
    assert seven_images != first_images
    assert field.evaluate("el => document.activeElement === el")  # Enter stayed in the field
    assert cells.count() == cell_count  # the digit and Enter were no notebook commands

    # text that is no unit of the layer: refused beside the field, nothing sent
    quiet(page)
    field.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("99")
    page.keyboard.press("Enter")
    note = overlay.locator(".nw-unit-note")
    expect(note).to_have_text("unit must be a whole number in 0..31, got 99")
    expect(field).to_have_attribute("aria-invalid", "true")
    overlay.screenshot(path=str(artifacts / "e2e_exercise_overlay_refused.png"))
    assert_readable(page, f"{NOTEBOOK} .nw-overlay")
    page.keyboard.press("Escape")  # gives up: the unit shown again
    expect(field).to_have_value("7")
    expect(note).to_be_hidden()

    # the next button
    quiet(page)
    overlay.locator(".nw-unit-next").click()
    expect(field).to_have_value("8")
    expect(overlay.locator('.nw-tiles[data-unit="8"] .nw-tile')).to_have_count(4, timeout=30_000)
    overlay.screenshot(path=str(artifacts / "e2e_exercise_overlay.png"))

    # contribution mode: a class picker appears; class 3's top images by the unit's contribution, signed maps
    quiet(page)
    overlay.locator('select[aria-label="overlay mode"]').select_option("contribution")
    picker = overlay.locator('select[aria-label="class"]')
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_count(11)  # "predicted class" and the 10 digits
    quiet(page)
    picker.select_option(label="3")
    expect(overlay.locator('.nw-tiles[data-mode="contribution"][data-target="3"] .nw-tile')).to_have_count(
        4, timeout=60_000
    )
    expect(overlay.locator(".nw-title")).to_have_text("unit 8 · layer relu2 · top 4 images for class 3")
    sums = overlay.locator(".nw-tile figcaption").evaluate_all("els => els.map((el) => el.title)")
    print(f"[exercise] unit 8's top images for class 3 by contribution: {sums}")
    assert all(" · sum " in text for text in sums), sums
    overlay.screenshot(path=str(artifacts / "e2e_exercise_overlay_contribution.png"))
    assert_readable(page, f"{NOTEBOOK} .nw-overlay")

    # the panel: the unit has no toggle; toggled by its number, the accuracy drops, a chip shows it
    expect(panel.locator(".nw-toggle")).to_have_count(TOGGLES)
    expect(panel.locator(f'.nw-toggle[data-unit="{unit}"]')).to_have_count(0)
    after = panel.locator(".nw-after")
    before_text = panel.locator(".nw-before").inner_text()
    expect(after).to_have_text(before_text)
    toggle_field = panel.locator('input.nw-toggle-unit[aria-label="toggle unit number"]')
    quiet(page)
    toggle_field.click()
    page.keyboard.type("32")
    page.keyboard.press("Enter")
    panel_note = panel.locator(".nw-toggle-note")
    expect(panel_note).to_have_text("unit must be a whole number in 0..31, got 32")
    panel.screenshot(path=str(artifacts / "e2e_exercise_panel_refused.png"))
    page.keyboard.press("Escape")
    expect(panel_note).to_be_hidden()
    page.keyboard.type(str(unit))
    page.keyboard.press("Enter")
    chip = panel.locator(f'.nw-extra .nw-chip[data-unit="{unit}"]')
    expect(chip).to_have_text(f"unit {unit} ×", timeout=30_000)
    expect(panel.locator(".nw-accuracy")).to_contain_text("(1 unit zeroed)", timeout=30_000)
    expect(after).not_to_have_text(before_text)
    after_text = after.inner_text()
    print(f"[exercise] accuracy with unit {unit} toggled off: {before_text} -> {after_text}")
    expect(toggle_field).to_have_value("")
    panel.screenshot(path=str(artifacts / "e2e_exercise_panel.png"))
    assert_readable(page, f"{NOTEBOOK} .nw-ablation")
    # the chip's x brings it back; the button toggles it again
    quiet(page)
    chip.click()
    expect(chip).to_have_count(0, timeout=30_000)
    expect(after).to_have_text(before_text, timeout=30_000)
    quiet(page)
    toggle_field.click()
    page.keyboard.type(str(unit))
    panel.locator(".nw-toggle-apply").click()
    expect(chip).to_be_visible(timeout=30_000)
    expect(after).to_have_text(after_text, timeout=30_000)

    # an overlay that follows a ranked list: a click on a row, and the tiles are its unit's
    ranked = cells.nth(2).locator(".nw-ranked-list")
    row = ranked.locator('.nw-row[data-rank="3"]')
    picked = row.get_attribute("data-unit")
    row.click()
    expect(followed.locator(f'.nw-tiles[data-unit="{picked}"] .nw-tile')).to_have_count(4, timeout=30_000)
    expect(followed.locator("input.nw-unit")).to_have_value(picked)
    cells.nth(2).scroll_into_view_if_needed()
    cells.nth(2).screenshot(path=str(artifacts / "e2e_exercise_follow.png"))
    page.screenshot(path=str(artifacts / "e2e_exercise_widgets.png"), full_page=True)

    # kernel side: what Python holds is what the page showed
    rerun_cell(
        cells.nth(3),
        f"KERNEL overlay=8 shown=8 toggled=[{unit}] ablated=[{unit}] followed={picked} selected={picked} "
        "mode=contribution target=3",
    )
    assert cells.count() == cell_count
    assert not page.problems, page.problems

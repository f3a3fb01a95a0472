"""End to end in a real JupyterLab (issue 14): the Explorer's overlay, on the colour shapes demo, shows a unit's
feature visualisation in the tile beside its top images when its button is pressed (a colour picture that
excites the unit more than the data's best image does), then switches to contribution mode with the tile kept;
another unit clears the tile, and coming back shows it again from the cache."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_exercise_widgets import assert_readable, quiet
from tests.e2e.test_explorer import rerun_cell
from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells

pytestmark = pytest.mark.e2e

K = 8  # ActivationOverlay's default k
UNITS = 32  # the shapes CNN's relu3
# the loaded picture's size, and how many of its pixels are not grey (r, g and b not all equal)
COLOURED = """(img) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] !== data[i + 1] || data[i + 1] !== data[i + 2]) coloured++;
  return { width: img.naturalWidth, height: img.naturalHeight, coloured, pixels: data.length / 4 };
}"""


def test_visual_tile_in_the_explorer(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    in_own_notebook(visual_tile, lab_page, jupyter_lab, artifacts)


def visual_tile(page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    run_all_cells(page, jupyter_lab, "visual_tile.ipynb")
    cells = page.locator(NOTEBOOK).locator(".jp-Cell")
    overlay = cells.nth(0).locator(".nw-explorer .nw-overlay")
    expect(overlay.locator(".nw-tiles .nw-tile")).to_have_count(K, timeout=120_000)
    field = overlay.locator('input.nw-unit[aria-label="unit number"]')
    unit = int(field.input_value())
    tile = overlay.locator(".nw-visual")
    expect(tile).to_have_attribute("data-state", "none")
    ask = tile.locator("button.nw-visual-ask")
    expect(ask).to_have_text("show what excites this unit")
    expect(tile.locator("img")).to_have_count(0)
    overlay.screenshot(path=str(artifacts / "e2e_visual_tile_button.png"))

    # pressed: computed in the kernel's background worker, then shown as a picture with its numbers as text
    quiet(page)
    ask.click()
    expect(tile).to_have_attribute("data-state", "done", timeout=120_000)
    picture = tile.locator("img.nw-visual-image")
    expect(picture).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    pixels = picture.evaluate(COLOURED)
    print(f"[visual] unit {unit}: picture {pixels}")
    assert (pixels["width"], pixels["height"]) == (32, 32)
    assert pixels["coloured"] > pixels["pixels"] // 2  # a colour picture, not grey
    lines = tile.locator(".nw-caption-line").all_inner_texts()
    found = re.fullmatch(r"mean (\S+) · best (\S+)", lines[1])
    assert lines[0] == "what excites it" and found, lines
    mean, best = float(found.group(1)), float(found.group(2))
    print(f"[visual] unit {unit}: mean activation {mean} on the visualisation, {best} on the best image")
    assert mean > best
    expect(tile.locator("figcaption")).to_have_attribute("title", re.compile(rf"excite unit {unit} of layer relu3"))
    overlay.screenshot(path=str(artifacts / "e2e_visual_tile.png"))
    assert_readable(page, f"{NOTEBOOK} .nw-overlay")

    # contribution mode: a class's top images by the unit's contribution; the tile stays (it is the unit's)
    quiet(page)
    overlay.locator('select[aria-label="overlay mode"]').select_option("contribution")
    picker = overlay.locator('select[aria-label="class"]')
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_count(5)  # "predicted class" and the four shapes
    quiet(page)
    picker.select_option(label="square")
    expect(overlay.locator('.nw-tiles[data-mode="contribution"][data-target="1"] .nw-tile')).to_have_count(
        K, timeout=60_000
    )
    expect(overlay.locator(".nw-title")).to_have_text(f"unit {unit} · layer relu3 · top {K} images for class square")
    sums = overlay.locator(".nw-tile figcaption").evaluate_all("els => els.map((el) => el.title)")
    print(f"[visual] unit {unit}'s top images for class square by contribution: {sums}")
    assert all(" · sum " in text for text in sums), sums
    expect(tile).to_have_attribute("data-state", "done")
    overlay.screenshot(path=str(artifacts / "e2e_visual_tile_contribution.png"))

    # another unit: its tile waits for its own button; back again, the first unit's picture from the cache
    away, back = (".nw-unit-next", ".nw-unit-previous") if unit < UNITS - 1 else (".nw-unit-previous", ".nw-unit-next")
    quiet(page)
    overlay.locator(away).click()
    other = unit + 1 if away == ".nw-unit-next" else unit - 1
    expect(overlay.locator(f'.nw-tiles[data-unit="{other}"] .nw-tile')).to_have_count(K, timeout=60_000)
    expect(tile).to_have_attribute("data-state", "none")
    expect(tile.locator("button.nw-visual-ask")).to_be_visible()
    quiet(page)
    overlay.locator(back).click()
    expect(tile).to_have_attribute("data-state", "done", timeout=60_000)
    expect(tile.locator(".nw-caption-line").nth(1)).to_have_text(lines[1])
    page.screenshot(path=str(artifacts / "e2e_visual_tile_page.png"), full_page=True)

    rerun_cell(cells.nth(1), f"KERNEL unit={unit} visual=done of={unit} mode=contribution target=1 beats=True")
    assert not page.problems, page.problems

"""End to end in a real JupyterLab: the ranked list's label column (issue 14, point 4). An Explorer on the
shapes demo with ``dissect=True`` shows each unit's best concept and IoU beside it (the kernel's dissection,
computed in the background) with the top three concepts as the label's tooltip; a label with markup in it is
shown as text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells

pytestmark = pytest.mark.e2e

EVIL = "<img src=x onerror=alert(3)>"


def test_the_label_column_in_jupyterlab(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    in_own_notebook(label_column, lab_page, jupyter_lab, artifacts)


def label_column(page, jupyter_lab: dict, artifacts: Path) -> None:
    from playwright.sync_api import expect

    run_all_cells(page, jupyter_lab, "labels.ipynb")
    cells = page.locator(NOTEBOOK).locator(".jp-Cell")
    ranked = cells.nth(0).locator(".nw-ranked-list")
    expect(ranked.locator(".nw-title")).to_contain_text("weight_l1 · layer relu3", timeout=90_000)
    labels = ranked.locator(".nw-row .nw-label")
    expect(labels.first).to_be_visible(timeout=90_000)  # the dissection landed
    printed = cells.nth(1).locator(".jp-OutputArea-output").first
    expect(printed).to_contain_text("EXPECTED", timeout=60_000)
    expected = json.loads(printed.inner_text().split("EXPECTED ", 1)[1])

    rows = ranked.locator(".nw-row")
    shown = {
        row.get_attribute("data-unit"): row.locator(".nw-label").inner_text() for row in rows.all() if row.is_visible()
    }
    assert len(shown) >= 10, shown
    assert all(expected[unit] == text for unit, text in shown.items()), (shown, expected)
    first = rows.first
    title = first.locator(".nw-label").get_attribute("title")
    assert re.fullmatch(r"IoU with concepts \(quantile 0\.005\): \w+ [\d.]+, \w+ [\d.]+, \w+ [\d.]+", title), title
    assert title.split(": ", 1)[1].startswith(expected[first.get_attribute("data-unit")].split()[0])
    # the label sits between the unit and the score bar, on one line, within the row
    unit_box, label_box, bar_box = (
        first.locator(sel).bounding_box() for sel in (".nw-unit", ".nw-label", ".nw-bar-track")
    )
    assert unit_box["x"] + unit_box["width"] <= label_box["x"] < bar_box["x"]
    assert label_box["height"] < 24
    first.hover()
    expect(ranked.locator(".nw-tip-text")).to_contain_text("IoU with concepts")
    print(f"[labels] rows shown: {shown}")
    cells.nth(0).screenshot(path=str(artifacts / "labels-explorer.png"))

    # markup in a label is text: no <img> made, the text shown as typed
    plain = cells.nth(2).locator(".nw-ranked-list")
    evil = plain.locator('.nw-row[data-unit="0"] .nw-label')
    expect(evil).to_have_text(EVIL, timeout=60_000)
    assert plain.locator("img[src='x']").count() == 0
    expect(plain.locator('.nw-row[data-unit="1"] .nw-label')).to_have_text("edge")
    expect(plain.locator('.nw-row[data-unit="2"] .nw-label')).to_have_text("")
    plain.screenshot(path=str(artifacts / "labels-plain.png"))

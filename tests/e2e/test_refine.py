"""End to end in a real JupyterLab: picking ablation, the ranked list shows the estimate refining, each unit's
interval drawn as a whisker, then the exact ranking, said to be exact (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_explorer import RUN_IN_KERNEL
from tests.e2e.test_many_classes import NOTEBOOK, in_own_notebook, run_all_cells

pytestmark = pytest.mark.e2e

ESTIMATE = r"estimate from \d+ of 360 images, 95% intervals"


def test_ablation_refines_live_to_the_exact_ranking(lab_page, jupyter_lab: dict, artifacts: Path) -> None:
    in_own_notebook(refine, lab_page, jupyter_lab, artifacts)


def refine(page, jupyter_lab: dict, artifacts: Path) -> None:
    """The notebook holds ablation at each estimate until the test releases it (its second cell)."""
    from playwright.sync_api import expect

    run_all_cells(page, jupyter_lab, "refine.ipynb")
    ranked = page.locator(NOTEBOOK).locator(".nw-explorer .nw-ranked-list")
    expect(ranked.locator(".nw-title")).to_contain_text("activation · layer relu2", timeout=90_000)
    expect(ranked.locator(".nw-sample")).to_be_hidden()  # a method that does not sample says nothing
    expect(ranked.locator(".nw-whisker")).to_have_count(0)

    ranked.locator('select[aria-label="ranking method"]').select_option("ablation")
    # the first estimate, held: whiskers on the rows, the status says how many images it is from
    expect(ranked.locator(".nw-sample")).to_have_text(re.compile(ESTIMATE), timeout=30_000)
    expect(ranked.locator(".nw-title")).to_contain_text("ablation · layer relu2")
    expect(ranked.locator(".nw-badge")).to_have_text("refining: the exact ranking is on the way")
    rows = ranked.locator(".nw-row")
    expect(rows.first.locator(".nw-whisker")).to_be_visible()
    assert ranked.locator(".nw-whisker").count() == rows.count() > 0
    width = rows.first.locator(".nw-whisker").evaluate("el => el.getBoundingClientRect().width")
    assert width > 2, f"the top unit's whisker is {width} px wide: an early estimate's interval is not drawn"
    rows.nth(1).hover()
    expect(ranked.locator(".nw-tip-text")).to_contain_text(re.compile(r"· interval -?[\d.e-]+ to -?[\d.e-]+"))
    ranked.scroll_into_view_if_needed()
    ranked.screenshot(path=str(artifacts / "e2e_refine_estimate.png"))
    page.mouse.move(0, 0)

    page.evaluate(RUN_IN_KERNEL, "release.set()")
    expect(ranked.locator(".nw-sample")).to_have_text("exact (all 360 images)", timeout=30_000)
    expect(ranked.locator(".nw-badge")).to_be_hidden()
    expect(ranked.locator(".nw-whisker")).to_have_count(0)
    ranked.screenshot(path=str(artifacts / "e2e_refine_exact.png"))
    assert page.locator("img[src='x']").count() == 0
    assert not page.problems, page.problems

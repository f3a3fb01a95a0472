"""The lesson (notebooks/02_teach.ipynb) holds up in class: it runs offline in a fresh kernel in under two
minutes, every number its text quotes is the one its cells compute, and no answer shows before it is asked for.

Each quantitative claim of the text is tied to a value the notebook computes into its ``facts`` dict; the claim
is formatted from that value and must appear in the text word for word, so a text that its own outputs
contradict fails here. The answers (behind ``nw.Reveal`` buttons) are run once after the notebook, in its
kernel: what they print must appear nowhere in the notebook's own outputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from neuronwidgets.datasets.shapes import COLOURS, SHAPES, TEXTURES
from tests.test_notebooks import offline

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "02_teach.ipynb"
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "teaching.md"
BUDGET = 120.0  # seconds on 2 cores
EXERCISES = ["1", "2", "2b", "3", "4", "5", "6", "7"]
ANSWERS = [f"answer_{n}" for n in EXERCISES]

READ_BACK = f"""
import contextlib, io, json
_answers = {{}}
for _name in {ANSWERS!r}:
    _buffer = io.StringIO()
    with contextlib.redirect_stdout(_buffer):
        globals()[_name]()
    _answers[_name] = _buffer.getvalue()
print(json.dumps({{"facts": {{k: float(v) for k, v in facts.items()}}, "answers": _answers}}))
"""


def claims(f: dict[str, float]) -> list[str]:
    """The text's quantitative claims, each formatted from the value the notebook computed for it."""
    one_image = 100 / f["images"]
    return [
        f"{f['images']:.0f} digits it has never seen",
        f"The test set has {f['images']:.0f} digits, {f['fewest_per_class']:.0f}-{f['most_per_class']:.0f} per class",
        f"One image is {one_image:.2f} points of the overall accuracy",
        f"{100 / f['most_per_class']:.1f}-{100 / f['fewest_per_class']:.1f} points of one class's accuracy",
        f"**every one of relu2's {f['relu2_units']:.0f} units**",
        f"by up to {100 * f['relu2_largest_drop']:.1f} points",
        f"**{f['relu3_changing']:.0f} of its {f['relu3_units']:.0f} units**",
        f"the largest drop is {100 * f['relu3_largest_drop']:.1f} points overall "
        f"({round(f['relu3_largest_drop'] * f['images'])} images)",
        f"{100 * f['relu3_largest_class_drop']:.1f} points in one class",
        f"unit 24 takes class 3 from 1.000 to {f['unit_24_zeroed']:.3f}",
        f"class 3 stays at {f['unit_24_mean']:.3f}",
        f"no relu2 unit costs more than {100 * f['largest_drop_mean']:.1f} points overall",
        f"**{f['pcace_above_null']:.0f} of the 32 units**",
        f"span only {f['weight_raw_min']:.1f} to {f['weight_raw_max']:.1f}",
        f"from {f['weight_raw_spearman']:+.2f} (raw) to {f['weight_folded_spearman']:+.2f}",
        f"takes {f['relu3_components_80']:.0f} components, or {f['relu3_neurons_80']:.0f} single units",
        *shapes_claims(f),
    ]


def shapes_claims(f: dict[str, float]) -> list[str]:
    """Section 6's claims (the shapes model, its red unit), formatted from the values the notebook computed."""
    concepts = [*SHAPES, *COLOURS, *TEXTURES]
    red, blue, needed = f"unit {f['red_unit']:.0f}", f"unit {f['blue_unit']:.0f}", f"unit {f['needed_unit']:.0f}"
    return [
        f"We use {f['shapes_images']:.0f} generated images it has never seen, "
        f"{f['shapes_fewest']:.0f}-{f['shapes_most']:.0f} per class; it names the shape of "
        f"{100 * f['shapes_accuracy']:.1f}% of them",
        f"Only {f['red_images']:.0f} of the {f['shapes_images']:.0f} images are red, and a shape covers "
        f"{100 * f['shape_area']:.0f}% of its image on average, so red covers {100 * f['red_pixel_share']:.1f}% of all",
        f"could be at most about {0.005 / f['red_pixel_share']:.2f}, however well it detects red",
        f"Dissection's answer: {red} matches red best (IoU {f['red_unit_iou']:.3f} at quantile 0.05), "
        f"and {f['red_units']:.0f} units have red as their best concept",
        f"Unit {f['red_unit']:.0f} also matches yellow (IoU {f['red_unit_yellow']:.3f})",
        f"the picture of {blue}, the unit that matches blue best (IoU {f['blue_unit_iou']:.3f})",
        f"In {red}'s picture the red channel is the brightest of the three in {100 * f['red_picture_reddest']:.0f}% "
        f"of the pixels, in {blue}'s in {100 * f['blue_picture_reddest']:.0f}%",
        f"Predict: without {red}, which shape classes lose accuracy, and how much? "
        f"And without all {f['red_units']:.0f} red units?",
        f'type {f["red_unit"]:.0f} into its "toggle unit" field',
        f"Without {red} every class stays at {f['red_unit_worst_class']:.3f}",
        f"Without all {f['red_units']:.0f} red units, {SHAPES[int(f['all_red_worst'])]} falls to "
        f"{f['all_red_worst_accuracy']:.3f} ({f['all_red_worst_lost']:.0f} of its {f['all_red_worst_images']:.0f} "
        f"images) and every other class stays at {f['all_red_others']:.3f}",
        f"(red images stay at {f['all_red_on_red']:.3f})",
        f"only {f['shapes_changing']:.0f} of relu2's 32 units change the accuracy at all",
        f"{needed} ({100 * f['needed_unit_drop']:.1f} points overall), has "
        f"{concepts[int(f['needed_unit_concept'])]} as its best concept (IoU {f['needed_unit_concept_iou']:.3f})",
        f"without it {SHAPES[int(f['needed_unit_worst'])]} falls to {f['needed_unit_worst_accuracy']:.3f}",
        f"Its IoU with red is {f['needed_unit_red_iou']:.3f}, and red images suffer more without it "
        f"({f['needed_unit_on_red']:.3f}, others {f['needed_unit_on_others']:.3f})",
    ]


def guide_claims(f: dict[str, float]) -> list[str]:
    """The numbers the teacher's guide quotes (its answer key), formatted from the lesson's values."""
    return [
        f"from 1.000 to {f['unit_24_zeroed']:.3f}",
        f"correlates {f['threes_correlation']:+.2f}",
        f"top 8 components leaves {f['relu3_8_components_descending']:.3f}",
        f"8 most-varying units leave {f['relu3_8_neurons_descending']:.3f}",
        f"{f['pcace_above_null']:.0f} of 32 units",
        f"unit {f['red_unit']:.0f} matches red best (IoU {f['red_unit_iou']:.3f})",
        f"all {f['red_units']:.0f} red units",
        f"{SHAPES[int(f['all_red_worst'])]} falls to {f['all_red_worst_accuracy']:.3f}",
        f"unit {f['needed_unit']:.0f} costs {100 * f['needed_unit_drop']:.1f} points",
    ]


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    """The lesson executed in a fresh kernel, offline: (notebook, facts, answers' printed text, seconds)."""
    import nbclient
    import nbformat

    mp = pytest.MonkeyPatch()
    offline(mp)
    notebook = nbformat.read(LESSON, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=BUDGET, kernel_name="python3", resources={"metadata": {"path": str(LESSON.parent)}}
    )
    try:
        with client.setup_kernel():
            start = time.perf_counter()
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
            seconds = time.perf_counter() - start
            read_back = nbformat.v4.new_code_cell(READ_BACK)
            notebook.cells.append(read_back)
            client.execute_cell(read_back, len(notebook.cells) - 1)
            notebook.cells.pop()
    finally:
        mp.undo()
    printed = "".join(o.get("text", "") for o in read_back.outputs if o.output_type == "stream")
    result = json.loads(printed.strip().splitlines()[-1])
    return notebook, result["facts"], result["answers"], seconds


def text_of(notebook) -> str:
    """The lesson's markdown, with its line breaks and runs of spaces as single spaces."""
    return " ".join(" ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown").split())


def outputs_of(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


@pytest.mark.slow
def test_the_lesson_runs_offline_in_under_two_minutes(lesson):
    notebook, _, _, seconds = lesson
    print(f"[timing] 02_teach.ipynb: {seconds:.1f} s")
    assert seconds < BUDGET
    assert not [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_every_number_the_text_quotes_is_what_its_cells_compute(lesson):
    notebook, facts, answers, _ = lesson
    text = text_of(notebook)
    missing = [claim for claim in claims(facts) if claim not in text]
    assert not missing, f"the lesson's text no longer says what its cells compute: {missing}"
    # the qualitative claims
    assert facts["relu2_changing"] == facts["relu2_units"]  # "every one of relu2's units"
    assert any(abs(facts["relu3_largest_class_drop"] - 1 / n) < 1e-9 for n in range(35, 38))  # "one image"
    assert facts["relu3_largest_drop"] < 0.01  # "single units of relu3 hardly matter"
    assert facts["unit_24_zeroed"] < facts["unit_24_mean"]
    assert facts["weight_folded_spearman"] > 0 > facts["weight_raw_spearman"]  # "no longer pointing the wrong way"
    assert facts["relu3_components_80"] < facts["relu3_neurons_80"]
    # the answers' words
    assert facts["threes_correlation"] > 0.5  # answer 3: "here the look-alike is a good guide"
    assert facts["planted_strongest_is_planted"]  # answer 2b: the planted unit answers its own kind of edge most
    assert "detect the right edges" in answers["answer_2b"]  # the guide's answer key
    assert facts["relu3_8_components_descending"] < facts["relu3_8_neurons_descending"] - 0.3  # answer 5
    assert "costs far more" in answers["answer_5"]
    # section 6: the shapes model's red unit
    assert f"unit {facts['red_unit']:.0f}: IoU with red" in answers["answer_6"].splitlines()[1]  # listed first
    assert facts["red_unit_iou"] > facts["red_unit_yellow"]  # "matches red best", yellow second
    assert facts["red_picture_reddest"] > facts["blue_picture_reddest"]  # "the picture agrees with dissection"
    assert facts["red_unit_accuracy"] == facts["red_unit_worst_class"] == facts["shapes_accuracy"] == 1  # no loss
    assert facts["all_red_worst_lost"] >= 1 and facts["all_red_others"] == facts["all_red_on_red"] == 1
    assert facts["needed_unit"] != facts["red_unit"] and facts["needed_unit_concept"] < len(SHAPES)  # "a shape"
    assert facts["needed_unit_on_red"] < facts["needed_unit_on_others"]  # "red images suffer more"
    assert "still not be needed" in answers["answer_7"]


@pytest.mark.slow
def test_no_answer_shows_before_it_is_asked_for(lesson):
    notebook, _, answers, _ = lesson
    shown = outputs_of(notebook)
    for name, printed in answers.items():
        lines = [line.strip() for line in printed.splitlines() if line.strip()]
        assert lines, f"{name} printed nothing"
        leaked = [line for line in lines if line in shown]
        assert not leaked, f"{name} shows before it is asked for: {leaked}"
    # each answer is a Reveal right after its exercise, and only there
    cells = notebook.cells
    for n, name in zip(EXERCISES, ANSWERS):
        at = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and f"**Exercise {n}.**" in c.source)
        reveal = next(i for i, c in enumerate(cells) if c.cell_type == "code" and f"nw.Reveal({name})" in c.source)
        assert at < reveal, f"the answer to exercise {n} comes before it"
        between = cells[at + 1 : reveal]
        assert all(f"def {name}" not in c.source for c in cells[:at]), f"{name} is defined before its exercise"
        assert not [c for c in between if c.cell_type == "markdown" and "**Exercise" in c.source]


@pytest.mark.slow
def test_the_teachers_guide_quotes_the_lesson(lesson):
    """The guide names the lesson's sections as the notebook does, and its answer key quotes the numbers the
    lesson computes."""
    notebook, facts, _, _ = lesson
    guide = " ".join(GUIDE.read_text().split())
    plan = notebook.cells[0].source
    for line in plan.splitlines():
        number, _, title = line.partition(". ")
        if number in {"1", "2", "2b", "3", "4", "5", "6", "7"}:
            assert title.split(" (")[0].replace("*", "") in guide.replace("*", ""), line
    assert "Exit question" in guide and "nw.Reveal" in guide
    missing = [claim for claim in guide_claims(facts) if claim not in guide]
    assert not missing, f"the guide's answer key no longer matches the lesson: {missing}"


def test_the_lessons_timings_add_up_with_slack():
    import re

    import nbformat

    plan = nbformat.read(LESSON, as_version=4).cells[0].source
    minutes = [int(m) for m in re.findall(r"\((\d+) min\)", plan)]
    assert len(minutes) == 8 and sum(minutes) <= 43, minutes

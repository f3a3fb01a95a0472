"""The ranked list's label column: a Dissection's best concept per unit, or the user's own labels."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

import neuronwidgets as nw
from tests.test_widgets import EVIL, outbox, update


@pytest.fixture(scope="module")
def probe():
    model, _ = nw.demo.load("shapes")
    return nw.Probe(model, nw.datasets.shapes(60, seed=5), layer="relu3")


@pytest.fixture(scope="module")
def dissection(probe):
    return probe.dissect(progress=False)


def synced(widget, sent, key):
    """The last value of ``key`` the widget sent to the front end."""
    values = [d["state"][key] for d, _ in sent if d.get("method") == "update" and key in d.get("state", {})]
    return values[-1]


def test_a_dissection_labels_each_unit_with_its_best_concept_and_top_three_in_the_tooltip(probe, dissection):
    ranking = probe.rank("weight_l1")
    ranked = nw.RankedList(ranking)
    assert ranked.label_texts == [] and ranked.label_titles == []
    sent = outbox(ranked)
    ranked.labels = dissection
    unit = int(np.argmax(dissection.iou.max(axis=1)))
    concept, iou = dissection.best[unit]
    assert synced(ranked, sent, "label_texts")[unit] == ranked.label_texts[unit] == f"{concept} {iou:.2f}"
    top = np.argsort(-dissection.iou[unit])[:3]
    title = ranked.label_titles[unit]
    assert [dissection.concepts[c] for c in top] == [part.split()[0] for part in title.split(": ", 1)[1].split(", ")]
    assert f"{dissection.iou[unit, top[2]]:.3f}" in title and "quantile 0.005" in title
    first = int(ranking.order[0])
    assert f"unit {first} ({ranking.scores[first]:.4g}, {ranked.label_texts[first]})" in ranked.describe()
    ranked.labels = None
    assert ranked.label_texts == [] and synced(ranked, sent, "label_texts") == []


def test_plain_labels_a_mapping_or_a_sequence_are_sent_as_given(probe):
    ranked = nw.RankedList(probe.rank("weight_l1"), labels={0: EVIL, 5: "edge"})
    assert ranked.label_texts[0] == EVIL and ranked.label_texts[5] == "edge" and ranked.label_texts[1] == ""
    names = [f"u{k}" for k in range(probe.units)]
    ranked.labels = names
    assert ranked.label_texts == names == ranked.label_titles


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({99: "x"}, "keys must be units in 0..31"),
        ({1: 3}, "must be a str"),
        (["a", "b"], "one str per unit"),
        ("red", "must be a Dissection"),
        (3, "must be a Dissection"),
    ],
)
def test_bad_labels_are_refused_clearly(probe, labels, message):
    ranked = nw.RankedList(probe.rank("weight_l1"))
    with pytest.raises(traitlets.TraitError, match=message):
        ranked.labels = labels
    assert ranked.labels is None and ranked.label_texts == []


def test_labels_show_for_their_layer_only(probe, dissection):
    ranked = nw.RankedList(probe, method="weight_l1", labels=dissection)
    ranked.wait(60)
    assert len(ranked.label_texts) == probe.units
    update(ranked, layer="relu2")
    ranked.wait(60)
    assert ranked.info["layer"] == "relu2" and ranked.label_texts == []  # relu3's labels are not relu2's
    update(ranked, layer="relu3")
    ranked.wait(60)
    assert len(ranked.label_texts) == probe.units
    other = probe.dissect(layer="relu1", progress=False)
    with pytest.raises(traitlets.TraitError, match="not one of this list's"):
        nw.RankedList(probe.rank("weight_l1"), labels=other)


def test_the_explorer_dissects_each_layer_it_shows_in_the_background(probe, dissection):
    explorer = nw.Explorer(probe, method="weight_l1", dissect=True)
    assert explorer.wait(120)
    ranked = explorer.ranked_list
    assert ranked.label_texts == [f"{c} {iou:.2f}" for c, iou in dissection.best]
    update(ranked, layer="relu2")
    assert explorer.wait(120)
    relu2 = probe.dissect(layer="relu2", progress=False)
    assert ranked.label_texts == [f"{c} {iou:.2f}" for c, iou in relu2.best]
    update(ranked, layer="relu3")  # cached: no second dissection
    assert ranked.label_texts == [f"{c} {iou:.2f}" for c, iou in dissection.best]


def test_dissect_needs_concept_masks():
    model, data = nw.demo.load()
    with pytest.raises(ValueError, match="concept_masks"):
        nw.RankedList(nw.Probe(model, data), dissect=True)

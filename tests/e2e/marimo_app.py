"""The marimo app tests/e2e/test_marimo.py runs: the Explorer in mo.ui.anywidget, a cell that prints its
``.value`` (marimo re-runs it when the Explorer's model changes), and the three single widgets."""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo

    import neuronwidgets as nw

    return mo, nw


@app.cell
def _(nw):
    model, data = nw.demo.load()
    probe = nw.Probe(model, data, layer="relu3")
    probe.classes = ["<img src=x onerror=alert(1)>", *[str(i) for i in range(1, 10)]]  # HTML must show as text
    return (probe,)


@app.cell
def _(mo, nw, probe):
    explorer = mo.ui.anywidget(nw.Explorer(probe, method="activation"))
    explorer  # noqa: B018 (a marimo cell shows its last expression)
    return (explorer,)


@app.cell
def _(explorer, mo):
    _value = explorer.value
    mo.plain_text(
        f"EXPLORER VALUE selected_unit={_value['selected_unit']} k={_value['k']} method={_value['method']} "
        f"layer={_value['layer']} ranking={_value['shown']['ranking']['method']}"
    )
    return


@app.cell
def _(mo, nw, probe):
    # each UI element a global: marimo keeps (and syncs) the elements that cells define
    ranked_list = mo.ui.anywidget(nw.RankedList(probe, method="weight_l1"))
    overlay = mo.ui.anywidget(nw.ActivationOverlay(probe, unit=1, k=4))
    panel = mo.ui.anywidget(nw.AblationPanel(probe))
    mo.vstack([ranked_list, overlay, panel])
    return ranked_list, overlay, panel


if __name__ == "__main__":
    app.run()

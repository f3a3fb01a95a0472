import { describe, expect, it } from "vitest";
import widget, { VIEWS, modelId, repeating } from "./explorer.js";
import { FakeModel, PNG, encoded } from "./testing/fake-model.js";

const EVIL = "<img src=x onerror=alert(1)>";
const STATUS = { status: "idle", progress: {}, error: "" };
const UNITS = 6;
const ORDER = [3, 1, 5, 0, 2, 4];

/** The three views' models as the kernel sends them (a small ranking of 6 units). */
function childStates() {
  const scores = ORDER.map((_, unit) => UNITS - ORDER.indexOf(unit));
  return {
    list: {
      ...STATUS, _key: "list-key", method: "ablation", target: null, layer: "relu3", layers: ["relu3"], selected_unit: null,
      methods: [{ name: "ablation", description: "accuracy drop", takes_target: true, needs_image: false }],
      classes: ["a", "b"], interactive: true, image: 0, scores: encoded(scores, "float64"), order: encoded(ORDER, "int32"),
      info: { method: "ablation", layer: "relu3", target: null, target_name: null, units: UNITS, provisional: false },
    },
    overlay: {
      ...STATUS, _key: "overlay-key", unit: 3, layer: "relu3", k: 1, image: null, colormap: "magma", colormaps: ["magma"],
      opacity: 0.6, scale: "shared", show_raw: false, image_count: 10, colorbar: PNG, vrange: [0, 1], shown: { unit: 3 },
      tiles: [{ index: 7, label: "a", chosen: false, peak: 1, vmin: 0, vmax: 1, image: PNG, map: PNG, raw: PNG }],
    },
    panel: {
      ...STATUS, _key: "panel-key", k: 0, toggled: [], mode: "zero", selected_unit: null, layer: "relu3", units: UNITS,
      order: encoded(ORDER, "int32"), method: "ablation", classes: ["a", "b"], before: { accuracy: 0.9, per_class: [1, 0.8] },
      after: { accuracy: 0.9, per_class: [1, 0.8], ablated: [], k: 0 }, changed: [], changed_count: 0,
    },
  };
}

/** Let the promises (the widget manager's) and the views' coalesced redraws run. */
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * An Explorer's model whose widget manager holds the three views' models (ids as the kernel makes them).
 * @param {Record<string, any>} [extra] Explorer traits to replace
 */
function setup(extra = {}) {
  const states = childStates();
  const children = { list1: new FakeModel(states.list), overlay2: new FakeModel(states.overlay), panel3: new FakeModel(states.panel) };
  const requested = [];
  const model = new FakeModel({
    _key: "explorer-key", ranked_list: "IPY_MODEL_list1", overlay: "IPY_MODEL_overlay2", panel: "IPY_MODEL_panel3",
    selected_unit: null, k: 0, ...extra,
  });
  model.widget_manager = {
    async get_model(id) {
      requested.push(id);
      if (!(id in children)) throw new Error(`Model not found with id: ${id}`);
      return children[id];
    },
  };
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = widget.render({ model, el });
  return { model, el, cleanup, requested, ...children };
}

describe("Explorer view", () => {
  it("renders each view's model with that view's own code, in the grid's cells", async () => {
    const { el, requested } = setup();
    const root = el.querySelector(".nw-explorer");
    expect([...root.children].map((c) => c.className)).toEqual([
      "nw-explorer-cell nw-explorer-list",
      "nw-explorer-cell nw-explorer-overlay",
      "nw-explorer-cell nw-explorer-panel",
    ]);
    await tick();
    expect(requested).toEqual(["list1", "overlay2", "panel3"]); // ids without ipywidgets' prefix
    expect(root.querySelector(".nw-explorer-list .nw-ranked-list")).not.toBeNull();
    expect(root.querySelector(".nw-explorer-overlay .nw-overlay")).not.toBeNull();
    expect(root.querySelector(".nw-explorer-panel .nw-ablation")).not.toBeNull();
    const units = [...root.querySelectorAll(".nw-row")].map((row) => Number(row.dataset.unit));
    expect(units).toEqual(ORDER);
  });

  it("repeats what a view sets of the linked traits on the Explorer's model, not the kernel's changes", async () => {
    const { model, el, list1, panel3 } = setup();
    await tick();
    el.querySelector('.nw-row[data-unit="5"]').click();
    expect(list1.saved.at(-1)).toEqual({ selected_unit: 5 });
    expect(model.saved).toEqual([{ selected_unit: 5 }]);
    const slider = el.querySelector("input.nw-k");
    slider.value = "2";
    slider.dispatchEvent(new Event("input"));
    expect(panel3.saved.at(-1)).toEqual({ k: 2 });
    expect(model.saved.at(-1)).toEqual({ k: 2 });
    const saves = model.saved.length;
    list1.pythonSet({ selected_unit: 1 }); // the kernel's own change: the kernel moves the Explorer itself
    panel3.pythonSet({ k: 4 });
    await tick();
    expect(model.saved.length).toBe(saves);
  });

  it("leaves the views' other traits to the views", () => {
    const child = new FakeModel({ opacity: 0.6, k: 1 });
    const parent = new FakeModel({});
    const proxy = repeating(child, parent, ["k"]);
    proxy.set("opacity", 0.2);
    proxy.save_changes();
    expect(child.saved).toEqual([{ opacity: 0.2 }]);
    expect(parent.saved).toEqual([]);
    proxy.set("k", 3);
    proxy.set("opacity", 0.3);
    proxy.save_changes();
    expect(parent.saved).toEqual([{ k: 3 }]);
    proxy.send({ type: "toggle", unit: 2 });
    expect(child.sent).toEqual([{ type: "toggle", unit: 2 }]);
  });

  it("cleans up every view's listeners with its own", async () => {
    const { cleanup, list1, overlay2, panel3 } = setup();
    await tick();
    expect(list1.listenerCount() + overlay2.listenerCount() + panel3.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect([list1.listenerCount(), overlay2.listenerCount(), panel3.listenerCount()]).toEqual([0, 0, 0]);
  });

  it("renders nothing for models that arrive after the view is gone", async () => {
    const { el, cleanup, list1 } = setup();
    cleanup();
    await tick();
    expect(el.querySelector(".nw-ranked-list")).toBeNull();
    expect(list1.listenerCount()).toBe(0);
  });

  it("says so, as text, in the cell of a view whose model cannot be had", async () => {
    const { el } = setup({ overlay: `IPY_MODEL_${EVIL}`, panel: 42 });
    await tick();
    expect(el.querySelector(".nw-explorer-overlay").textContent).toBe(
      `neuronwidgets: the Explorer's overlay view could not load: Model not found with id: ${EVIL}`,
    );
    expect(el.querySelector(".nw-explorer-panel").textContent).toContain("not a widget reference: 42");
    expect(el.querySelector("img[src='x']")).toBeNull();
    expect(el.querySelector(".nw-ranked-list")).not.toBeNull();
  });

  it("reads model ids from ipywidgets' references only", () => {
    expect(modelId("IPY_MODEL_abc123")).toBe("abc123");
    for (const bad of ["abc123", "IPY_MODEL_", null, 7]) expect(() => modelId(bad)).toThrow(TypeError);
    expect(VIEWS.map((v) => v.trait)).toEqual(["ranked_list", "overlay", "panel"]);
  });
});

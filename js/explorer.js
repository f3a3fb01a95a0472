// @ts-check
/**
 * Explorer: the ranked list, the activation overlay and the ablation panel of one probe, in one grid.
 *
 * The Explorer's model references its three views' models ("IPY_MODEL_<id>", ipywidgets' widget_serialization);
 * this view gets each from the widget manager (ipywidgets' in JupyterLab, marimo's in marimo) and renders it
 * with that view's own code, so the views are the same as on their own. The linking happens in the kernel.
 */
import ablationPanel from "./ablation-panel.js";
import activationOverlay from "./activation-overlay.js";
import { h } from "./lib/dom.js";
import { lasting } from "./lib/lasting.js";
import { teardown } from "./lib/model.js";
import rankedList from "./ranked-list.js";

/** @typedef {import("./lib/model.js").Model} Model */

/**
 * One of the Explorer's views.
 * @typedef {Object} View
 * @property {string} trait the Explorer's trait that references the view's model
 * @property {{ render: (ctx: { model: Model, el: HTMLElement }) => () => void }} widget the view's code
 * @property {string} area its place in the grid (js/widgets.css)
 * @property {string[]} linked its traits the kernel links to the Explorer's traits of the same name
 */

/** @type {View[]} in the kernel's order (neuronwidgets/widgets/explorer.py, LINKED) */
export const VIEWS = [
  { trait: "ranked_list", widget: rankedList, area: "list", linked: ["selected_unit", "method", "target", "layer"] },
  { trait: "overlay", widget: activationOverlay, area: "overlay", linked: [] },
  { trait: "panel", widget: ablationPanel, area: "panel", linked: ["k", "mode", "toggled"] },
];

const PREFIX = "IPY_MODEL_";

/**
 * The model id in a widget reference as ipywidgets serialises it.
 * @param {unknown} ref e.g. "IPY_MODEL_3f2a..."
 * @returns {string}
 */
export function modelId(ref) {
  if (typeof ref !== "string" || !ref.startsWith(PREFIX) || ref.length === PREFIX.length) {
    throw new TypeError(`not a widget reference: ${JSON.stringify(ref)}`);
  }
  return ref.slice(PREFIX.length);
}

/**
 * A view's model that also tells the Explorer's model what the view sets of the linked traits. The kernel
 * links them anyway; the repeat is for marimo, which re-runs the cells that read `.value` only when the
 * Explorer's own model changes. Changes the kernel makes are not repeated (they are its own already).
 * @param {Model} child the view's model
 * @param {Model} parent the Explorer's model
 * @param {string[]} linked
 * @returns {Model}
 */
export function repeating(child, parent, linked) {
  /** @type {Set<string>} */
  const pending = new Set();
  return {
    get: (key) => child.get(key),
    set: (key, value) => {
      child.set(key, value);
      if (typeof key === "string" && linked.includes(key)) pending.add(key);
    },
    save_changes: () => {
      child.save_changes();
      if (!pending.size) return;
      for (const key of pending) parent.set(key, child.get(key));
      pending.clear();
      parent.save_changes();
    },
    send: (content, callbacks, buffers) => child.send(content, callbacks, buffers),
    on: (event, handler) => child.on(event, handler),
    off: (event, handler) => child.off(event, handler),
    widget_manager: child.widget_manager,
  };
}

/**
 * Render one view into its cell once its model is there; returns the cleanup.
 * @param {Model} model the Explorer's model
 * @param {View} view
 * @param {HTMLElement} cell
 * @returns {() => void}
 */
function renderView(model, view, cell) {
  let gone = false;
  /** @type {(() => void) | null} */
  let cleanup = null;
  Promise.resolve()
    .then(() => model.widget_manager.get_model(modelId(model.get(view.trait))))
    .then(
      (child) => {
        if (!gone) cleanup = view.widget.render({ model: repeating(child, model, view.linked), el: cell });
      },
      (err) => {
        if (!gone) cell.replaceChildren(missing(view, err));
      },
    );
  return () => {
    gone = true;
    cleanup?.();
  };
}

/**
 * What a cell shows when its view's model cannot be had (as text).
 * @param {View} view
 * @param {unknown} err
 * @returns {HTMLElement}
 */
function missing(view, err) {
  const why = err instanceof Error ? err.message : String(err);
  return h("div", { class: "nw-root nw-error", text: `neuronwidgets: the Explorer's ${view.area} view could not load: ${why}` });
}

/** @param {{ model: Model, el: HTMLElement }} ctx */
function render({ model, el }) {
  const root = h("div", { class: "nw-explorer" });
  const steps = VIEWS.map((view) => {
    const cell = h("div", { class: `nw-explorer-cell nw-explorer-${view.area}` });
    root.append(cell);
    return renderView(model, view, cell);
  });
  el.replaceChildren(root);
  return teardown(steps);
}

export default { render: lasting(render) };

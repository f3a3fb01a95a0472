// @ts-check
/** AblationPanel: a top-k slider and per-unit toggles; accuracy before/after, per class, changed predictions. */
import { h, listen, on, setOptions } from "./lib/dom.js";
import { percent } from "./lib/format.js";
import { UrlPool } from "./lib/images.js";
import { lasting } from "./lib/lasting.js";
import { decodeArray, setTrait, teardown } from "./lib/model.js";
import { statusStrip } from "./lib/status.js";

export const TOGGLES = 16; // toggles shown: the ranking's top units (plus the selected unit)

/**
 * The ranking's units, most important first.
 * @param {import("./lib/model.js").Model} model
 * @returns {number[]}
 */
function orderOf(model) {
  return Array.from(decodeArray(model.get("order")).data);
}

/** @param {{ model: import("./lib/model.js").Model, el: HTMLElement }} ctx */
function render({ model, el }) {
  const urls = new UrlPool();
  const slider = h("input", { class: "nw-range nw-k", attrs: { type: "range", min: 0, step: 1, "aria-label": "ablate the top k units" } });
  const kLabel = h("span", { class: "nw-k-label" });
  const mode = h("select", { class: "nw-select", attrs: { "aria-label": "ablation mode" } });
  setOptions(mode, [["zero", "zero"], ["mean", "mean"]], model.get("mode"));
  const title = h("div", { class: "nw-title" });
  const accuracy = h("div", { class: "nw-accuracy", attrs: { "aria-live": "polite" } });
  const toggles = h("div", { class: "nw-toggles" });
  const classes = h("div", { class: "nw-classes" });
  const changedTitle = h("div", { class: "nw-subtitle" });
  const changed = h("div", { class: "nw-changed" });
  const status = statusStrip(model);
  const root = h("div", { class: "nw-root nw-ablation" }, [
    h("div", { class: "nw-heading" }, [title]),
    h("div", { class: "nw-controls" }, [
      h("label", { class: "nw-field nw-grow" }, [h("span", { text: "ablate top" }), slider, kLabel]),
      h("label", { class: "nw-field" }, [h("span", { text: "mode" }), mode]),
    ]),
    toggles,
    status.el,
    accuracy,
    classes,
    changedTitle,
    changed,
  ]);
  el.replaceChildren(root);

  /** The units removed: top k of the ranking with the toggled ones flipped (mirrors the kernel). */
  function ablatedSet() {
    const set = new Set(orderOf(model).slice(0, model.get("k")));
    for (const unit of model.get("toggled") || []) {
      if (set.has(unit)) set.delete(unit);
      else set.add(unit);
    }
    return set;
  }

  function syncControls() {
    const units = model.get("units");
    slider.max = String(units);
    if (document.activeElement !== slider) slider.value = String(model.get("k"));
    kLabel.textContent = `${slider.value} of ${units}`;
    mode.value = model.get("mode");
    title.textContent = `ablation · layer ${model.get("layer")} · ranked by ${model.get("method")}`;
    const shown = orderOf(model).slice(0, TOGGLES);
    const selected = model.get("selected_unit");
    if (selected !== null && selected !== undefined && !shown.includes(selected)) shown.push(selected);
    const ablated = ablatedSet();
    toggles.replaceChildren(
      h("span", { class: "nw-subtitle", text: "units:" }),
      ...shown.map((unit) =>
        h("label", { class: `nw-toggle${unit === selected ? " nw-selected" : ""}`, attrs: { "data-unit": unit } }, [
          h("input", { attrs: { type: "checkbox", checked: ablated.has(unit), "data-unit": unit } }),
          h("span", { text: String(unit) }),
        ]),
      ),
    );
  }

  function syncResult() {
    const before = model.get("before") || {};
    const after = model.get("after") || {};
    const stale = model.get("status") === "running";
    root.classList.toggle("nw-stale", stale);
    accuracy.replaceChildren(
      h("span", { text: "accuracy " }),
      h("strong", { class: "nw-before", text: percent(before.accuracy) }),
      h("span", { text: " → " }),
      h("strong", { class: "nw-after", text: percent(after.accuracy), attrs: { "data-k": after.k ?? "" } }),
      h("span", { class: "nw-muted", text: ` (${(after.ablated || []).length} units ${after.mode === "mean" ? "set to their mean" : "zeroed"})` }),
    );
    /** @type {string[]} */
    const names = model.get("classes") || [];
    classes.replaceChildren(
      ...names.map((name, i) => {
        const b = before.per_class?.[i];
        const a = after.per_class?.[i];
        const row = h("div", { class: "nw-class-row" }, [
          h("span", { class: "nw-class-name", text: name, attrs: { title: name } }),
          h("span", { class: "nw-bar-track" }, [h("span", { class: "nw-bar nw-bar-before" }), h("span", { class: "nw-bar nw-bar-after" })]),
          h("span", { class: "nw-score", text: `${percent(b)} → ${percent(a)}` }),
        ]);
        const [beforeBar, afterBar] = /** @type {HTMLElement[]} */ ([...row.querySelectorAll(".nw-bar")]);
        beforeBar.style.width = `${100 * (b ?? 0)}%`;
        afterBar.style.width = `${100 * (a ?? 0)}%`;
        return row;
      }),
    );
    urls.revokeAll();
    /** @type {any[]} */
    const items = model.get("changed") || [];
    const count = model.get("changed_count");
    changedTitle.textContent = count ? `${count} predictions changed${count > items.length ? ` (first ${items.length} shown)` : ""}` : "no prediction changed";
    changed.replaceChildren(
      ...items.map((item) =>
        h("figure", { class: `nw-change ${item.fixed ? "nw-fixed" : "nw-broken"}`, attrs: { "data-index": item.index } }, [
          h("img", { attrs: { src: urls.png(item.image), alt: `image ${item.index}` } }),
          h("figcaption", { text: `#${item.index} (${item.label}): ${item.before} → ${item.after}` }),
        ]),
      ),
    );
  }

  const onSlide = () => {
    kLabel.textContent = `${slider.value} of ${model.get("units")}`;
    setTrait(model, "k", Number(slider.value)); // each move is a request; the kernel runs only the latest
  };
  const onMode = () => setTrait(model, "mode", mode.value);
  /** @param {Event} event */
  const onToggle = (event) => {
    const input = /** @type {HTMLInputElement} */ (event.target);
    if (input.dataset.unit !== undefined) model.send({ type: "toggle", unit: Number(input.dataset.unit) });
  };
  const cleanup = teardown([
    on(slider, "input", onSlide),
    on(mode, "change", onMode),
    on(toggles, "change", onToggle),
    listen(model, ["change:k", "change:units", "change:mode", "change:order", "change:toggled", "change:selected_unit", "change:layer", "change:method"], syncControls),
    listen(model, ["change:before", "change:after", "change:changed", "change:status", "change:classes"], syncResult),
    status.cleanup,
    () => urls.revokeAll(),
  ]);
  syncControls();
  syncResult();
  return cleanup;
}

export default { render: lasting(render) };

// @ts-check
/** AblationPanel: a top-k slider and per-unit toggles; accuracy before/after, per class, changed predictions. */
import { ALL_CLASSES_UP_TO, TOP_CLASSES, classChanges, classesToList } from "./lib/classes.js";
import { h, on, redrawOn, setOptions, throttled } from "./lib/dom.js";
import { percent } from "./lib/format.js";
import { showPng } from "./lib/images.js";
import { lasting } from "./lib/lasting.js";
import { decodeArray, setTrait, teardown } from "./lib/model.js";
import { statusStrip } from "./lib/status.js";
import { parseUnit, refusal } from "./lib/units.js";

export const TOGGLES = 16; // toggles shown: the ranking's top units (plus the selected unit)
export const THUMBNAILS_KEPT = 200; // decoded pictures of changed predictions kept for reuse, by image index
export const SLIDER_INTERVAL = 100; // ms between the k values a dragged slider sends (the kernel runs the latest)

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
  const slider = h("input", { class: "nw-range nw-k", attrs: { type: "range", min: 0, step: 1, "aria-label": "ablate the top k units" } });
  const kLabel = h("span", { class: "nw-k-label" });
  const mode = h("select", { class: "nw-select", attrs: { "aria-label": "ablation mode" } });
  setOptions(mode, [["zero", "zero"], ["mean", "mean"]], model.get("mode"));
  const title = h("div", { class: "nw-title" });
  const accuracy = h("div", { class: "nw-accuracy", attrs: { "aria-live": "polite" } });
  const toggles = h("div", { class: "nw-toggles" });
  // any unit, by its number: the toggles above are only the ranking's top units
  const unitField = h("input", {
    class: "nw-number nw-toggle-unit",
    attrs: { type: "number", min: 0, step: 1, placeholder: "unit #", "aria-label": "toggle unit number", autocomplete: "off" },
  });
  const toggleButton = h("button", { class: "nw-button nw-toggle-apply", text: "toggle", attrs: { type: "button", title: "ablate this unit, or bring it back" } });
  const { note: unitNote, say: refuseUnit } = refusal(unitField, "nw-toggle-note");
  const extra = h("div", { class: "nw-extra" });
  const warning = h("div", { class: "nw-warnings", attrs: { role: "status" } });
  const classesTitle = h("span", { class: "nw-subtitle nw-classes-title" });
  const classSearch = h("input", {
    class: "nw-search nw-class-filter",
    attrs: { type: "search", placeholder: "search classes", "aria-label": "search classes", autocomplete: "off", spellcheck: "false" },
  });
  const showAll = h("button", { class: "nw-button nw-show-all", attrs: { type: "button", "aria-pressed": "false" } });
  const classesBar = h("div", { class: "nw-classes-bar" }, [classesTitle, classSearch, showAll]);
  const classes = h("div", { class: "nw-classes" });
  let listAll = false;
  const changedTitle = h("div", { class: "nw-subtitle nw-changed-title" });
  const changed = h("div", { class: "nw-changed" });
  const status = statusStrip(model);
  const root = h("div", { class: "nw-root nw-ablation" }, [
    h("div", { class: "nw-heading" }, [title]),
    h("div", { class: "nw-controls" }, [
      h("label", { class: "nw-field nw-grow" }, [h("span", { text: "ablate top" }), slider, kLabel]),
      h("label", { class: "nw-field" }, [h("span", { text: "mode" }), mode]),
      h("span", { class: "nw-field" }, [h("span", { text: "toggle unit" }), unitField, toggleButton]),
    ]),
    unitNote,
    toggles,
    extra,
    status.el,
    accuracy,
    warning,
    classesBar,
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
    syncExtra(new Set(shown), ablated);
  }

  /**
   * The units toggled by number that have no toggle above, each a chip that undoes its toggle: those ablated
   * ("unit 29 ×"), and those of the top k brought back ("unit 20 kept ×").
   * @param {Set<number>} shown units with a toggle @param {Set<number>} ablated
   */
  function syncExtra(shown, ablated) {
    /** @type {number[]} */
    const toggled = (model.get("toggled") || []).filter((/** @type {number} */ unit) => !shown.has(unit));
    const chip = (/** @type {number} */ unit, /** @type {boolean} */ off) =>
      h("button", {
        class: `nw-button nw-chip${off ? "" : " nw-kept"}`,
        text: `unit ${unit}${off ? "" : " kept"} ×`,
        attrs: {
          type: "button",
          "data-unit": unit,
          title: off ? `unit ${unit} is ablated: click to bring it back` : `unit ${unit} of the top k is kept: click to ablate it again`,
        },
      });
    const off = toggled.filter((unit) => ablated.has(unit));
    const kept = toggled.filter((unit) => !ablated.has(unit));
    extra.replaceChildren(
      ...(off.length ? [h("span", { class: "nw-subtitle", text: "also ablated:" }), ...off.map((unit) => chip(unit, true))] : []),
      ...(kept.length ? [h("span", { class: "nw-subtitle", text: "kept of the top k:" }), ...kept.map((unit) => chip(unit, false))] : []),
    );
    extra.hidden = !toggled.length;
  }

  /** Toggle the unit typed in the field (the kernel checks it again), or say why not and send nothing. */
  function toggleTyped() {
    const parsed = parseUnit(unitField.value, model.get("units") || 0, unitField.validity.badInput);
    if ("refused" in parsed) {
      refuseUnit(parsed.refused);
      return;
    }
    refuseUnit(null);
    unitField.value = "";
    model.send({ type: "toggle", unit: parsed.unit });
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
      h("span", { class: "nw-muted", text: ` (${removed(after)})` }),
    );
    syncWarning(before);
    syncClasses(before, after);
    syncChanged();
  }

  /** How many units the result removed and how, e.g. "1 unit zeroed", "3 units set to their mean". */
  function removed(/** @type {Record<string, any>} */ after) {
    const count = (after.ablated || []).length;
    const mean = after.mode === "mean";
    return count === 1 ? `1 unit ${mean ? "set to its mean" : "zeroed"}` : `${count} units ${mean ? "set to their mean" : "zeroed"}`;
  }

  /** @type {Map<number, HTMLImageElement>} image index -> its decoded picture (the same for every request) */
  const thumbnails = new Map();
  /** @type {unknown} */
  let changedShown = null;
  /** The changed predictions: redrawn only when the kernel sent a new list, reusing each image's picture (a
   * slider drag lands a new list every few steps: new <img>s and blob URLs for each were the page's long tasks). */
  function syncChanged() {
    /** @type {any[]} */
    const items = model.get("changed") || [];
    const count = model.get("changed_count");
    changedTitle.textContent = count
      ? `${count.toLocaleString("en-US")} prediction${count === 1 ? "" : "s"} changed${count > items.length ? ` (first ${items.length} shown)` : ""}`
      : "no prediction changed";
    if (items === changedShown) return;
    changedShown = items;
    changed.replaceChildren(
      ...items.map((item) =>
        h("figure", { class: `nw-change ${item.fixed ? "nw-fixed" : "nw-broken"}`, attrs: { "data-index": item.index } }, [
          thumbnail(item),
          h("figcaption", { text: `#${item.index} (${item.label}): ${item.before} → ${item.after}` }),
        ]),
      ),
    );
  }

  /** @param {{ index: number, image: DataView }} item @returns {HTMLImageElement} */
  function thumbnail(item) {
    let img = thumbnails.get(item.index);
    if (img) thumbnails.delete(item.index); // re-inserted below: the most recently used last
    else img = showPng(h("img", { attrs: { alt: `image ${item.index}` } }), item.image);
    thumbnails.set(item.index, img);
    for (const oldest of thumbnails.keys()) {
      if (thumbnails.size <= THUMBNAILS_KEPT) break;
      thumbnails.delete(oldest);
    }
    return img;
  }

  /** What the kernel says about the accuracy without ablation (e.g. at or below chance, and why), as text. */
  function syncWarning(/** @type {Record<string, any>} */ before) {
    /** @type {string[]} */
    const warnings = before.warnings || [];
    warning.replaceChildren(...warnings.map((text) => h("div", { class: "nw-warning", text: `⚠ ${text}` })));
    warning.hidden = !warnings.length;
  }

  /** The per-class rows: all of a few classes; of many, those that changed most (or all, or the matches). */
  function syncClasses(/** @type {Record<string, any>} */ before, /** @type {Record<string, any>} */ after) {
    /** @type {string[]} */
    const names = model.get("classes") || [];
    const changes = classChanges(names.length, before.per_class, after.per_class);
    const query = classSearch.value;
    const { rows, matching, sorted } = classesToList(names, changes, { query, all: listAll });
    const many = names.length > ALL_CLASSES_UP_TO;
    classesBar.hidden = !many;
    classes.classList.toggle("nw-scroll", many);
    const total = names.length.toLocaleString("en-US");
    if (query.trim()) classesTitle.textContent = `${matching.toLocaleString("en-US")} of ${total} classes match, most changed first`;
    else if (listAll) classesTitle.textContent = `all ${total} classes, most changed first`;
    else if (!rows.some((r) => r.change)) classesTitle.textContent = `no class's accuracy changed (${rows.length} of ${total} classes shown)`;
    else classesTitle.textContent = `the ${rows.length} of ${total} classes whose accuracy changed most`;
    showAll.textContent = listAll ? `top ${TOP_CLASSES} only` : `show all ${total}`;
    showAll.setAttribute("aria-pressed", String(listAll));
    showAll.hidden = Boolean(query.trim());
    classes.dataset.sorted = String(sorted);
    classes.replaceChildren(
      ...rows.map(({ index, before: b, after: a, change }) => {
        const name = names[index];
        const row = h("div", { class: "nw-class-row", attrs: { "data-class": index } }, [
          h("span", { class: "nw-class-name", text: name, attrs: { title: name } }),
          h("span", { class: "nw-bar-track" }, [h("span", { class: "nw-bar nw-bar-before" }), h("span", { class: "nw-bar nw-bar-after" })]),
          h("span", { class: "nw-score", text: `${percent(b)} → ${percent(a)}`, attrs: { title: change === null ? "no image of this class" : `change ${percent(change)}` } }),
        ]);
        const [beforeBar, afterBar] = /** @type {HTMLElement[]} */ ([...row.querySelectorAll(".nw-bar")]);
        beforeBar.style.width = `${100 * (b ?? 0)}%`;
        afterBar.style.width = `${100 * (a ?? 0)}%`;
        return row;
      }),
    );
    if (!rows.length) classes.replaceChildren(h("div", { class: "nw-muted", text: `no class matches “${query.trim()}”` }));
  }

  const refreshClasses = () => syncClasses(model.get("before") || {}, model.get("after") || {});
  const onShowAll = () => {
    listAll = !listAll;
    refreshClasses();
  };
  /** @param {KeyboardEvent} event */
  const onSearchKey = (event) => {
    if (event.key === "Escape" && classSearch.value) {
      classSearch.value = "";
      refreshClasses();
      event.preventDefault();
    }
    event.stopPropagation(); // typed into the box, not the notebook (whose shortcuts are single letters)
  };

  // a drag sends its value at most every SLIDER_INTERVAL ms and its last value always (on release at once):
  // each value is a comm message and an evaluation request, of which the kernel runs only the latest anyway
  const sendK = throttled((/** @type {number} */ k) => setTrait(model, "k", k), SLIDER_INTERVAL);
  const onSlide = () => {
    kLabel.textContent = `${slider.value} of ${model.get("units")}`;
    sendK(Number(slider.value));
  };
  const onMode = () => setTrait(model, "mode", mode.value);
  /** @param {KeyboardEvent} event */
  const onUnitKey = (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      toggleTyped();
    } else if (event.key === "Escape") {
      unitField.value = "";
      refuseUnit(null);
    }
    event.stopPropagation(); // typed into the field, not the notebook (whose shortcuts include digits and Enter)
  };
  /** @param {MouseEvent} event */
  const onChip = (event) => {
    const chip = /** @type {HTMLElement} */ (event.target).closest(".nw-chip");
    if (chip instanceof HTMLElement && chip.dataset.unit !== undefined) model.send({ type: "toggle", unit: Number(chip.dataset.unit) });
  };
  /** @param {Event} event */
  const onToggle = (event) => {
    const input = /** @type {HTMLInputElement} */ (event.target);
    if (input.dataset.unit !== undefined) model.send({ type: "toggle", unit: Number(input.dataset.unit) });
  };
  const cleanup = teardown([
    on(slider, "input", onSlide),
    on(slider, "change", () => sendK.flush()),
    on(mode, "change", onMode),
    on(unitField, "keydown", onUnitKey),
    on(unitField, "input", () => refuseUnit(null)),
    on(toggleButton, "click", toggleTyped),
    on(extra, "click", onChip),
    on(toggles, "change", onToggle),
    on(classSearch, "input", refreshClasses),
    on(classSearch, "keydown", onSearchKey),
    on(showAll, "click", onShowAll),
    redrawOn(model, ["change:k", "change:units", "change:mode", "change:order", "change:toggled", "change:selected_unit", "change:layer", "change:method"], syncControls),
    redrawOn(model, ["change:before", "change:after", "change:changed", "change:changed_count", "change:status", "change:classes"], syncResult),
    status.cleanup,
    sendK.cancel,
  ]);
  syncControls();
  syncResult();
  return cleanup;
}

export default { render: lasting(render) };

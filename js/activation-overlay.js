// @ts-check
/**
 * ActivationOverlay: top images of a unit with its activation map over each, or (contribution mode) the images
 * where it adds most to a class's score with its contribution map over each; opacity works in the browser.
 * A tile before the images shows, once asked for, the unit's feature visualisation (computed in the kernel).
 */
import { h, on, redrawOn, setOptions } from "./lib/dom.js";
import { score } from "./lib/format.js";
import { showPng } from "./lib/images.js";
import { lasting } from "./lib/lasting.js";
import { setTrait, teardown } from "./lib/model.js";
import { statusStrip } from "./lib/status.js";
import { parseUnit, refusal } from "./lib/units.js";

/** The colormap menu's last entry on the short list: picking it lists all the others. */
const MORE = "\u0000more";
/** The class menu's value for "each image's predicted class" (target null). */
const PREDICTED = "";

/** @param {any} model */
const contributing = (model) => model.get("mode") === "contribution";
/** The trait the colormap menu sets: the diverging colormap of signed contribution maps, or the colormap. */
const colormapTrait = (/** @type {any} */ model) => (contributing(model) ? "diverging_colormap" : "colormap");

/**
 * A tile's caption in two lines that never wrap (the full text is its tooltip): which image and its label,
 * then the map's peak and, in per-image scale, the range its colours span.
 * @param {Record<string, any>} tile @param {boolean} perImage
 */
function caption(tile, perImage) {
  const which = `${tile.chosen ? "chosen · " : ""}#${tile.index}${tile.label === null ? "" : ` · ${tile.label}`}`;
  const value = tile.total === null || tile.total === undefined ? `peak ${score(tile.peak)}` : `sum ${signed(tile.total)}`;
  const values = `${value}${perImage ? ` · ${score(tile.vmin)}…${score(tile.vmax)}` : ""}`;
  return h("figcaption", { attrs: { title: `${which} · ${values}` } }, [
    h("span", { class: "nw-caption-line", text: which }),
    h("span", { class: "nw-caption-line", text: values }),
  ]);
}

/** A signed number: a contribution's sign is the point. @param {number} x */
const signed = (x) => (x > 0 ? `+${score(x)}` : score(x));

/**
 * The feature visualisation tile: a button that asks the kernel for the unit's visualisation (`visualize`
 * message naming the unit and layer shown); while it is computed, a note and a Cancel button (the progress is
 * in the status strip); then the picture (a PNG buffer) with its mean activation and the data's best. A
 * visualisation of another unit or layer than the one shown (the kernel has not caught up yet) is not shown.
 * @param {import("./lib/model.js").Model} model
 */
function visualTile(model) {
  const ask = h("button", {
    class: "nw-button nw-visual-ask",
    text: "show what excites this unit",
    attrs: { type: "button", title: "optimise an input to excite this unit (feature visualisation)" },
  });
  const cancel = h("button", { class: "nw-button nw-visual-cancel", text: "Cancel", attrs: { type: "button", "aria-label": "cancel the visualisation" } });
  const note = h("span", { class: "nw-visual-note" });
  const picture = h("img", { class: "nw-visual-image", attrs: { alt: "" } });
  const line1 = h("span", { class: "nw-caption-line" });
  const line2 = h("span", { class: "nw-caption-line" });
  const caption = h("figcaption", {}, [line1, line2]);
  const stack = h("div", { class: "nw-stack nw-visual-stack" });
  const el = h("figure", { class: "nw-visual" }, [stack, caption]);
  let asked = false; // the button was pressed and the kernel has not answered yet

  function sync() {
    /** @type {Record<string, any>} */
    const visual = model.get("visual") || {};
    const unit = model.get("unit");
    const layer = model.get("layer");
    const ours = visual.unit === unit && visual.layer === layer;
    const state = ours ? visual.state : undefined;
    el.dataset.state = state ?? "none";
    el.dataset.unit = String(unit);
    if (state === "done") {
      showPng(picture, visual.image);
      picture.alt = `feature visualisation of unit ${unit}`;
      stack.replaceChildren(picture);
      line1.textContent = "what excites it";
      line2.textContent = `mean ${score(visual.activation)} · best ${score(visual.best)}`;
      caption.title =
        `an input optimised to excite unit ${unit} of layer ${layer}: its mean activation ${score(visual.activation)}; ` +
        `the data's most exciting image (#${visual.best_index}) gives ${score(visual.best)} (${visual.steps} steps, ${score(visual.seconds)} s)`;
      return;
    }
    picture.removeAttribute("src");
    const running = state === "running";
    ask.disabled = asked && !running;
    note.textContent = running ? "computing…" : state === "cancelled" ? "cancelled" : state === "error" ? "failed: see the error above" : "";
    stack.replaceChildren(h("div", { class: "nw-visual-empty" }, [running ? null : ask, note, running ? cancel : null]));
    line1.textContent = "what excites it";
    line2.textContent = running ? "optimising an input…" : "not computed yet";
    caption.title = "feature visualisation: an input optimised to excite the unit, computed on request";
  }

  const cleanup = teardown([
    on(ask, "click", () => {
      asked = true;
      ask.disabled = true;
      model.send({ type: "visualize", unit: model.get("unit"), layer: model.get("layer") });
    }),
    on(cancel, "click", () => model.send({ type: "cancel" })),
    redrawOn(model, ["change:visual", "change:unit", "change:layer", "change:error"], () => {
      asked = false;
      sync();
    }),
  ]);
  sync();
  return { el, cleanup };
}

/**
 * A unit picker: a number field (Enter or a change applies it; text that is no unit of the layer is refused,
 * said so in `note`, and not sent) and previous/next buttons. `apply(unit)` gets each unit picked.
 * @param {{ label: string, apply: (unit: number) => void, units: () => number, current: () => number }} options
 */
function unitPicker({ label, apply, units, current }) {
  const field = h("input", {
    class: "nw-number nw-unit",
    attrs: { type: "number", min: 0, step: 1, "aria-label": label, autocomplete: "off" },
  });
  const previous = h("button", { class: "nw-button nw-unit-previous", text: "‹", attrs: { type: "button", "aria-label": "previous unit", title: "previous unit" } });
  const next = h("button", { class: "nw-button nw-unit-next", text: "›", attrs: { type: "button", "aria-label": "next unit", title: "next unit" } });
  const range = h("span", { class: "nw-muted nw-unit-range" });
  const el = h("span", { class: "nw-field nw-unit-picker" }, [h("span", { text: "unit" }), previous, field, next, range]);
  const { note, say: refuse } = refusal(field, "nw-unit-note");
  let edited = false; // the field holds text typed since the unit was last shown in it

  /** @param {number} unit */
  function pick(unit) {
    refuse(null);
    edited = false;
    field.value = String(unit);
    if (unit !== current()) apply(unit);
  }

  function onEnter() {
    const parsed = parseUnit(field.value, units(), field.validity.badInput);
    if ("refused" in parsed) {
      refuse(parsed.refused);
      edited = true; // the refused text stays to be corrected
    } else pick(parsed.unit);
  }

  /** @param {KeyboardEvent} event */
  function onKey(event) {
    if (event.key === "Enter") {
      event.preventDefault();
      onEnter();
    } else if (event.key === "Escape") {
      sync(true);
    }
    event.stopPropagation(); // typed into the field, not the notebook (whose shortcuts include digits and Enter)
  }

  /** Show the model's unit and range; text typed in the field stays while the field has the focus. */
  function sync(force = false) {
    const n = units();
    const unit = current();
    field.max = String(Math.max(0, n - 1));
    range.textContent = n > 0 ? `0–${n - 1}` : "";
    previous.disabled = unit <= 0;
    next.disabled = unit >= n - 1;
    if (force || !edited || document.activeElement !== field) {
      field.value = String(unit);
      refuse(null);
      edited = false;
    }
  }

  const cleanup = teardown([
    on(field, "change", onEnter),
    on(field, "keydown", onKey),
    on(field, "input", () => {
      edited = true;
      refuse(null);
    }),
    on(previous, "click", () => pick(Math.max(0, current() - 1))),
    on(next, "click", () => pick(Math.min(units() - 1, current() + 1))),
  ]);
  return { el, note, sync, cleanup };
}

/** @param {{ model: import("./lib/model.js").Model, el: HTMLElement }} ctx */
function render({ model, el }) {
  const picker = unitPicker({
    label: "unit number",
    apply: (unit) => setTrait(model, "unit", unit),
    units: () => model.get("units") || 0,
    current: () => model.get("unit"),
  });
  const mode = h("select", { class: "nw-select nw-mode", attrs: { "aria-label": "overlay mode" } });
  setOptions(mode, [["activation", "activation"], ["contribution", "contribution to class"]], model.get("mode"));
  const target = h("select", { class: "nw-select nw-target", attrs: { "aria-label": "class" } });
  const targetField = h("label", { class: "nw-field" }, [h("span", { text: "class" }), target]);
  const colormap = h("select", { class: "nw-select", attrs: { "aria-label": "colormap" } });
  const opacity = h("input", {
    class: "nw-range nw-opacity",
    attrs: { type: "range", min: 0, max: 1, step: 0.05, "aria-label": "opacity" },
  });
  const scale = h("select", { class: "nw-select", attrs: { "aria-label": "colour scale" } });
  setOptions(scale, [["shared", "shared scale"], ["image", "per-image scale"]], model.get("scale"));
  const raw = h("input", { attrs: { type: "checkbox", "aria-label": "show the raw map" } });
  const border = h("input", {
    attrs: { type: "checkbox", "aria-label": "hide the maps' border", title: "leave out the outer ring of each map, which zero padding shapes" },
  });
  const image = h("input", {
    class: "nw-number",
    attrs: { type: "number", min: 0, step: 1, placeholder: "image #", "aria-label": "chosen image index" },
  });
  const title = h("div", { class: "nw-title" });
  const colorbar = h("img", { class: "nw-colorbar", attrs: { alt: "colour bar" } });
  const barLow = h("span", { class: "nw-colorbar-label" });
  const barHigh = h("span", { class: "nw-colorbar-label" });
  const grid = h("div", { class: "nw-tiles" });
  const visual = visualTile(model);
  const status = statusStrip(model, { cancellable: true });
  const root = h("div", { class: "nw-root nw-overlay" }, [
    h("div", { class: "nw-heading" }, [title]),
    h("div", { class: "nw-controls" }, [
      picker.el,
      mode,
      targetField,
      h("label", { class: "nw-field" }, [h("span", { text: "colormap" }), colormap]),
      h("label", { class: "nw-field" }, [h("span", { text: "opacity" }), opacity]),
      scale,
      h("label", { class: "nw-field nw-check" }, [raw, h("span", { text: "raw map" })]),
      h("label", { class: "nw-field nw-check" }, [border, h("span", { text: "hide border" })]),
      h("label", { class: "nw-field" }, [h("span", { text: "image" }), image]),
    ]),
    picker.note,
    h("div", { class: "nw-colorbar-row" }, [barLow, colorbar, barHigh]),
    status.el,
    h("div", { class: "nw-tiles-row" }, [visual.el, grid]),
  ]);
  el.replaceChildren(root);

  let allColormaps = false; // the short list until "more…" is picked (or the colormap is not on it)
  let menuMode = model.get("mode"); // the mode whose short list the menu shows
  /** The short list of colormaps (diverging ones for contribution maps), then "more…"; or, once asked for,
   * the short list and all the others. */
  function syncColormaps() {
    if (menuMode !== model.get("mode")) {
      menuMode = model.get("mode");
      allColormaps = false;
    }
    /** @type {string[]} */
    const first = model.get(contributing(model) ? "diverging_colormaps" : "colormaps") || [];
    /** @type {string[]} the others: for contribution maps, the activation maps' short list too */
    const others = [...(contributing(model) ? model.get("colormaps") || [] : []), ...(model.get("colormaps_more") || [])];
    const more = others.filter((name) => !first.includes(name));
    const chosen = model.get(colormapTrait(model));
    allColormaps ||= !first.includes(chosen);
    const wanted = allColormaps ? first.length + more.length : first.length + 1;
    const names = [...colormap.options].map((o) => o.value);
    if (names.length === wanted && names[0] === first[0] && colormap.value === chosen) return;
    const options = (/** @type {string[]} */ names) => names.map((name) => h("option", { text: name, attrs: { value: name } }));
    colormap.replaceChildren(
      ...options(first),
      allColormaps
        ? h("optgroup", { attrs: { label: "more colormaps" } }, options(more))
        : h("option", { text: `more… (${more.length})`, attrs: { value: MORE } }),
    );
    colormap.value = chosen;
  }

  function syncControls() {
    picker.sync();
    syncColormaps();
    colormap.value = model.get(colormapTrait(model));
    mode.value = model.get("mode");
    targetField.hidden = !contributing(model);
    /** @type {string[]} */
    const classes = model.get("classes") || [];
    const chosenClass = model.get("target");
    const classValue = chosenClass === null || chosenClass === undefined ? PREDICTED : String(chosenClass);
    if (target.options.length !== classes.length + 1 || target.value !== classValue) {
      setOptions(target, [[PREDICTED, "predicted class"], ...classes.map((name, i) => /** @type {[string, string]} */ ([String(i), name]))], classValue);
    }
    opacity.value = String(model.get("opacity"));
    scale.value = model.get("scale");
    raw.checked = model.get("show_raw");
    border.checked = model.get("hide_border");
    const chosen = model.get("image");
    if (document.activeElement !== image) image.value = chosen === null || chosen === undefined ? "" : String(chosen);
    image.max = String(Math.max(0, model.get("image_count") - 1));
    const forClass = chosenClass === null || chosenClass === undefined ? "the predicted class" : `class ${classes[chosenClass] ?? chosenClass}`;
    title.textContent = `unit ${model.get("unit")} · layer ${model.get("layer")} · top ${model.get("k")} images${contributing(model) ? ` for ${forClass}` : ""}`;
    grid.classList.toggle("nw-show-raw", model.get("show_raw"));
    grid.style.setProperty("--nw-opacity", String(model.get("opacity")));
  }

  function syncTiles() {
    /** @type {any[]} */
    const tiles = model.get("tiles") || [];
    const shown = model.get("shown") || {};
    const perImage = (shown.scale ?? model.get("scale")) === "image"; // the scale the tiles were drawn with
    const symmetric = shown.mode === "contribution"; // signed maps, on a scale centred on zero
    grid.dataset.unit = shown.unit === undefined ? "" : String(shown.unit);
    const [vmin, vmax] = model.get("vrange") || [null, null];
    showPng(colorbar, model.get("colorbar"));
    const [low, high] = symmetric ? ["−max |value|", "+max |value|"] : ["min", "max"];
    barLow.textContent = perImage ? `${low} of each image` : score(vmin);
    barHigh.textContent = perImage ? `${high} of each image` : score(vmax);
    grid.dataset.mode = shown.mode ?? "activation";
    grid.dataset.target = shown.target === null || shown.target === undefined ? "" : String(shown.target);
    grid.replaceChildren(
      ...tiles.map((tile) =>
        h("figure", { class: `nw-tile${tile.chosen ? " nw-chosen" : ""}`, attrs: { "data-index": tile.index } }, [
          h("div", { class: "nw-stack" }, [
            showPng(h("img", { class: "nw-base", attrs: { alt: `image ${tile.index}` } }), tile.image),
            showPng(h("img", { class: "nw-map", attrs: { alt: "" } }), tile.map),
            showPng(h("img", { class: "nw-raw", attrs: { alt: `raw map of image ${tile.index}` } }), tile.raw),
          ]),
          caption(tile, perImage),
        ]),
      ),
    );
  }

  const onColormap = () => {
    if (colormap.value !== MORE) {
      setTrait(model, colormapTrait(model), colormap.value);
      return;
    }
    allColormaps = true;
    syncColormaps();
    colormap.focus();
  };
  const onOpacity = () => {
    grid.style.setProperty("--nw-opacity", opacity.value); // instant, before the kernel hears of it
    setTrait(model, "opacity", Number(opacity.value));
  };
  const onScale = () => setTrait(model, "scale", scale.value);
  const onMode = () => setTrait(model, "mode", mode.value);
  const onTarget = () => setTrait(model, "target", target.value === PREDICTED ? null : Number(target.value));
  const onRaw = () => setTrait(model, "show_raw", raw.checked);
  const onBorder = () => setTrait(model, "hide_border", border.checked);
  const onImage = () => {
    const value = image.value.trim();
    setTrait(model, "image", value === "" ? null : Math.trunc(Number(value)));
  };
  const cleanup = teardown([
    on(colormap, "change", onColormap),
    on(opacity, "input", onOpacity),
    on(scale, "change", onScale),
    on(mode, "change", onMode),
    on(target, "change", onTarget),
    on(raw, "change", onRaw),
    on(border, "change", onBorder),
    on(image, "change", onImage),
    redrawOn(
      model,
      ["change:colormaps", "change:colormaps_more", "change:colormap", "change:mode", "change:target", "change:classes", "change:diverging_colormap", "change:diverging_colormaps", "change:opacity", "change:scale", "change:show_raw", "change:hide_border", "change:image", "change:unit", "change:units", "change:layer", "change:k"],
      syncControls,
    ),
    redrawOn(model, ["change:tiles", "change:colorbar", "change:vrange", "change:shown"], syncTiles),
    status.cleanup,
    visual.cleanup,
    picker.cleanup,
  ]);
  syncControls();
  syncTiles();
  return cleanup;
}

export default { render: lasting(render) };

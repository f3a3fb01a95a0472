// @ts-check
/** RankedList: units in ranked order with score bars; virtualised, so thousands of units stay fast. */
import { h, listen, on, setOptions } from "./lib/dom.js";
import { score } from "./lib/format.js";
import { UrlPool, bytesOf } from "./lib/images.js";
import { lasting } from "./lib/lasting.js";
import { statusStrip } from "./lib/status.js";

export const ROW_HEIGHT = 24;
const VIEW_ROWS = 16; // rows visible in the viewport (its CSS height is VIEW_ROWS * ROW_HEIGHT)
const OVERSCAN = 6;

/**
 * @param {DataView | null | undefined} view
 * @returns {Float32Array}
 */
export function float32(view) {
  const b = bytesOf(view);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/**
 * @param {DataView | null | undefined} view
 * @returns {Int32Array}
 */
export function int32(view) {
  const b = bytesOf(view);
  return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** @param {{ model: import("@anywidget/types").AnyModel<any>, el: HTMLElement }} ctx */
function render({ model, el }) {
  const urls = new UrlPool();
  /** @type {Map<number, string>} unit -> thumbnail blob URL, for the current layer */
  const thumbs = new Map();
  let scores = new Float32Array(0);
  let order = new Int32Array(0);
  let rankOf = new Int32Array(0);
  let lo = 0;
  let hi = 1;
  /** @type {number | null} */
  let hovered = null;
  const rowIdPrefix = `nw-unit-${Math.random().toString(36).slice(2, 8)}-`;

  const method = h("select", { class: "nw-select", attrs: { "aria-label": "ranking method" } });
  const target = h("select", { class: "nw-select", attrs: { "aria-label": "class" } });
  const layer = h("select", { class: "nw-select", attrs: { "aria-label": "layer" } });
  const refresh = h("button", {
    class: "nw-button nw-refresh",
    text: "↻ Refresh",
    attrs: { type: "button", title: "rank again (after the model changed)" },
  });
  const title = h("div", { class: "nw-title" });
  const badge = h("span", { class: "nw-badge" });
  const spacer = h("div", { class: "nw-list-spacer" });
  const viewport = h("div", {
    class: "nw-list-viewport",
    attrs: { role: "listbox", tabindex: 0, "aria-label": "units, most important first" },
  }, [spacer]);
  viewport.style.height = `${VIEW_ROWS * ROW_HEIGHT}px`;
  const tipImage = h("img", { class: "nw-tip-image", attrs: { alt: "" } });
  const tipText = h("div", { class: "nw-tip-text" });
  const tip = h("div", { class: "nw-tip", attrs: { role: "tooltip" } }, [tipText, tipImage]);
  tip.hidden = true;
  const status = statusStrip(model, { cancellable: true });
  const root = h("div", { class: "nw-root nw-ranked-list" }, [
    h("div", { class: "nw-controls" }, [
      h("label", { class: "nw-field" }, [h("span", { text: "method" }), method]),
      h("label", { class: "nw-field" }, [h("span", { text: "class" }), target]),
      h("label", { class: "nw-field" }, [h("span", { text: "layer" }), layer]),
      refresh,
    ]),
    h("div", { class: "nw-heading" }, [title, badge]),
    status.el,
    h("div", { class: "nw-list-wrap" }, [viewport, tip]),
  ]);
  el.replaceChildren(root);

  function syncControls() {
    const interactive = model.get("interactive");
    /** @type {[string, string, boolean][]} */
    const methods = model.get("methods") || [];
    setOptions(method, methods.map(([name]) => [name, name]), model.get("method"));
    method.title = methods.find(([name]) => name === model.get("method"))?.[1] ?? "";
    const accepts = methods.find(([name]) => name === model.get("method"))?.[2] ?? false;
    /** @type {string[]} */
    const classes = model.get("classes") || [];
    setOptions(target, [["", "all classes"], ...classes.map((c, i) => [String(i), c])], String(model.get("target") ?? ""));
    /** @type {string[]} */
    const layers = model.get("layers") || [];
    setOptions(layer, layers.map((l) => [l, l]), model.get("layer"));
    method.disabled = !interactive;
    target.disabled = !interactive || !accepts;
    layer.disabled = !interactive;
    refresh.disabled = !interactive;
  }

  function syncRanking() {
    scores = float32(model.get("scores"));
    order = int32(model.get("order"));
    rankOf = new Int32Array(order.length);
    order.forEach((unit, rank) => (rankOf[unit] = rank));
    lo = Math.min(0, ...scores);
    hi = Math.max(...scores, lo + 1e-12);
    const info = model.get("info") || {};
    const parts = [`${info.method ?? ""}`, `layer ${info.layer ?? ""}`];
    parts.push(info.target_name === null || info.target_name === undefined ? "all classes" : `class ${info.target_name}`);
    title.textContent = `${parts.join(" · ")} · ${info.units ?? 0} units`;
    badge.textContent = info.provisional ? `fast estimate (${info.method}); ${info.estimate_for} on the way` : "";
    badge.hidden = !info.provisional;
    spacer.style.height = `${order.length * ROW_HEIGHT}px`;
    onLeave(); // a tooltip from the previous ranking would show a stale rank and score
    drawRows();
  }

  /** Draw only the rows in view (plus a margin): cheap for any number of units. */
  function drawRows() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(order.length, first + VIEW_ROWS + 2 * OVERSCAN);
    const selected = model.get("selected_unit");
    const rows = [];
    for (let rank = first; rank < last; rank++) {
      const unit = order[rank];
      const value = scores[unit];
      const width = (100 * (value - lo)) / (hi - lo);
      const row = h(
        "div",
        {
          class: `nw-row${unit === selected ? " nw-selected" : ""}`,
          attrs: { role: "option", id: `${rowIdPrefix}${unit}`, "aria-selected": String(unit === selected), "data-unit": unit, "data-rank": rank },
        },
        [
          h("span", { class: "nw-rank", text: String(rank + 1) }),
          h("span", { class: "nw-unit", text: `unit ${unit}` }),
          h("span", { class: "nw-bar-track" }, [h("span", { class: "nw-bar" })]),
          h("span", { class: "nw-score", text: score(value) }),
        ],
      );
      row.style.top = `${rank * ROW_HEIGHT}px`;
      /** @type {HTMLElement} */ (row.querySelector(".nw-bar")).style.width = `${Math.max(0, width).toFixed(1)}%`;
      rows.push(row);
    }
    spacer.replaceChildren(...rows);
    if (selected !== null && selected !== undefined) viewport.setAttribute("aria-activedescendant", `${rowIdPrefix}${selected}`);
    else viewport.removeAttribute("aria-activedescendant");
  }
  /** @param {number} unit */
  function select(unit) {
    model.set("selected_unit", unit);
    model.save_changes();
    drawRows();
  }

  /** @param {number} rank */
  function scrollToRank(rank) {
    const top = rank * ROW_HEIGHT;
    const height = VIEW_ROWS * ROW_HEIGHT;
    if (top < viewport.scrollTop) viewport.scrollTop = top;
    else if (top + ROW_HEIGHT > viewport.scrollTop + height) viewport.scrollTop = top + ROW_HEIGHT - height;
  }

  /** @param {Event} event */
  function rowOf(event) {
    const target = /** @type {HTMLElement | null} */ (event.target);
    const row = target?.closest?.(".nw-row");
    return row instanceof HTMLElement ? Number(row.dataset.unit) : null;
  }

  /** @param {MouseEvent} event */
  function onClick(event) {
    const unit = rowOf(event);
    if (unit !== null) {
      viewport.focus();
      select(unit);
    }
  }

  /** @param {KeyboardEvent} event */
  function onKey(event) {
    if (!order.length) return;
    const selected = model.get("selected_unit");
    const current = selected === null || selected === undefined ? -1 : rankOf[selected];
    /** @type {Record<string, number>} */
    const moves = { ArrowDown: current + 1, ArrowUp: current - 1, PageDown: current + VIEW_ROWS, PageUp: current - VIEW_ROWS, Home: 0, End: order.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const rank = Math.max(0, Math.min(order.length - 1, moves[event.key]));
    scrollToRank(rank);
    select(order[rank]);
  }

  /** @param {MouseEvent} event */
  function onHover(event) {
    const unit = rowOf(event);
    if (unit === hovered) return;
    hovered = unit;
    if (unit === null) {
      tip.hidden = true;
      return;
    }
    const rank = rankOf[unit];
    tipText.textContent = `unit ${unit} · rank ${rank + 1} · score ${score(scores[unit])}`;
    tip.style.top = `${rank * ROW_HEIGHT - viewport.scrollTop + ROW_HEIGHT}px`;
    tip.hidden = false;
    const url = thumbs.get(unit);
    tipImage.hidden = !url;
    if (url) tipImage.src = url;
    else if (model.get("interactive")) model.send({ type: "thumbnail", unit });
  }

  function onLeave() {
    hovered = null;
    tip.hidden = true;
  }

  /** @param {any} msg @param {DataView[]} buffers */
  function onMessage(msg, buffers) {
    if (!msg || msg.type !== "thumbnail" || msg.layer !== model.get("layer") || !buffers?.length) return;
    const url = urls.png(buffers[0]);
    thumbs.set(msg.unit, url);
    if (hovered === msg.unit) {
      tipImage.src = url;
      tipImage.hidden = false;
    }
  }

  function onLayerChange() {
    thumbs.clear();
    urls.revokeAll();
  }

  /** @param {string} name @param {any} value */
  function setTrait(name, value) {
    model.set(name, value);
    model.save_changes();
  }
  const onMethod = () => setTrait("method", method.value);
  const onTarget = () => setTrait("target", target.value === "" ? null : Number(target.value));
  const onLayer = () => setTrait("layer", layer.value);
  const onRefresh = () => {
    thumbs.clear();
    model.send({ type: "refresh" });
  };

  const offs = [
    on(method, "change", onMethod),
    on(target, "change", onTarget),
    on(layer, "change", onLayer),
    on(refresh, "click", onRefresh),
    on(viewport, "click", onClick),
    on(viewport, "keydown", onKey),
    on(viewport, "scroll", drawRows),
    on(viewport, "mousemove", onHover),
    on(viewport, "mouseleave", onLeave),
    listen(model, ["msg:custom"], onMessage),
    listen(model, ["change:methods", "change:method", "change:target", "change:classes", "change:layers", "change:layer", "change:interactive"], syncControls),
    listen(model, ["change:scores", "change:order", "change:info"], syncRanking),
    listen(model, ["change:selected_unit"], drawRows),
    listen(model, ["change:layer"], onLayerChange),
  ];
  syncControls();
  syncRanking();

  return () => {
    for (const off of offs) off();
    status.cleanup();
    urls.revokeAll();
  };
}

export default { render: lasting(render) };

// @ts-check
/** RankedList: units in ranked order with score bars; virtualised, so thousands of units stay fast. */
import { h, listen, on, redrawOn, setOptions } from "./lib/dom.js";
import { score } from "./lib/format.js";
import { showPng } from "./lib/images.js";
import { lasting } from "./lib/lasting.js";
import { decodeArray, setTrait, teardown } from "./lib/model.js";
import { searchNames } from "./lib/search.js";
import { statusStrip } from "./lib/status.js";

export const ROW_HEIGHT = 24;
const VIEW_ROWS = 16; // rows visible in the viewport (its CSS height is VIEW_ROWS * ROW_HEIGHT)
const OVERSCAN = 6;
/** With more classes than this, the class picker is a search box with a list of matches, not a <select>. */
export const SEARCH_FROM = 24;
/** Matches the class search lists at most (type more to narrow them). */
export const MATCHES_SHOWN = 50;

/** @typedef {import("./lib/model.js").Model} Model */
/** @typedef {import("./lib/model.js").NumberArray} NumberArray */

/**
 * A ranking method as the kernel declares it (`neuronwidgets.methods.spec`).
 * @typedef {{ name: string, description: string, takes_target: boolean, needs_target?: boolean, needs_image: boolean }} MethodInfo
 */

/**
 * The ranking shown, decoded once per change.
 * @typedef {Object} Shown
 * @property {NumberArray} scores score of each unit
 * @property {NumberArray} order unit indices, most important first
 * @property {Int32Array} rankOf rank of each unit (0 = most important)
 * @property {NumberArray | null} intervals an estimate's lower and upper bound of each unit's score (flat, 2 per unit)
 * @property {NumberArray | null} settled 1 for each unit whose place in or out of the top set is settled
 * @property {Set<number>} topSet the settled top set (with `top=`)
 * @property {number} lo the score at the left end of the bars (0 or the lowest score)
 * @property {number} hi the score at the right end of the bars (the highest score or upper bound)
 * @property {string[]} labels each unit's label ([]: no label column)
 * @property {string[]} labelTitles each label's tooltip
 */

/**
 * The DOM of one view.
 * @typedef {Object} Parts
 * @property {HTMLElement} root
 * @property {HTMLSelectElement} method
 * @property {HTMLSelectElement} target the class picker for a few classes
 * @property {HTMLInputElement} search the class picker for many: a combobox
 * @property {HTMLElement} matches its list of matching classes
 * @property {HTMLElement} targetField
 * @property {HTMLElement} searchField
 * @property {HTMLElement} warnings
 * @property {HTMLElement} prompt
 * @property {HTMLSelectElement} layer
 * @property {HTMLInputElement} image
 * @property {HTMLElement} imageField
 * @property {HTMLButtonElement} refresh
 * @property {HTMLElement} title
 * @property {HTMLElement} badge
 * @property {HTMLElement} sample what the ranking is based on: "exact", or an estimate from some of the images
 * @property {HTMLElement} spacer
 * @property {HTMLElement} viewport
 * @property {HTMLElement} tip
 * @property {HTMLElement} tipText
 * @property {HTMLImageElement} tipImage
 */

/**
 * Decode the ranking traits.
 * @param {Model} model
 * @returns {Shown}
 */
export function decodeRanking(model) {
  const scores = decodeArray(model.get("scores")).data;
  const order = decodeArray(model.get("order")).data;
  const rankOf = new Int32Array(order.length);
  order.forEach((unit, rank) => (rankOf[unit] = rank));
  const intervals = model.get("intervals") ? decodeArray(model.get("intervals")).data : null;
  const settled = model.get("settled") ? decodeArray(model.get("settled")).data : null;
  const topSet = new Set(/** @type {number[]} */ ((model.get("info") || {}).top_set || []));
  const lo = Math.min(0, ...scores);
  let hi = Math.max(...scores, lo + 1e-12);
  // the bars' scale reaches the highest upper bound, so every whisker's right end shows
  for (let i = 1; intervals && i < intervals.length; i += 2) if (intervals[i] > hi) hi = intervals[i];
  /** @type {string[]} */
  const texts = model.get("label_texts") || [];
  // labels of another number of units than the ranking's are of another layer: not shown
  const labels = texts.length === order.length ? texts : [];
  const labelTitles = labels.length ? model.get("label_titles") || [] : [];
  return { scores, order, rankOf, intervals, settled, topSet, lo, hi, labels, labelTitles };
}

/**
 * What the ranking is based on, for a method that says (`info.exact` set): "exact (all N images)", or the
 * estimate's images and intervals; "" for a method that does not say.
 * @param {Record<string, any>} info the `info` trait
 * @returns {string}
 */
export function sampleStatus(info) {
  if (info.exact === null || info.exact === undefined) return "";
  const count = (/** @type {number} */ n) => n.toLocaleString("en-US");
  const population = count(info.population ?? 0);
  if (info.exact) return `exact (all ${population} images)`;
  const [fewest, most] = info.images_used ?? [0, 0];
  const used = fewest === most ? `${count(fewest)} of ${population} images` : `${count(fewest)} to ${count(most)} of ${population} images per unit`;
  const level = info.confidence === null || info.confidence === undefined ? "" : `${Math.round(100 * info.confidence)}% `;
  return `estimate from ${used}, ${level}intervals${info.simultaneous ? " for all units at once" : ""}`;
}

/**
 * The badge of a provisional ranking: what is on the way (the method's own estimate refining, or a fast
 * estimate by a cheaper method).
 * @param {Record<string, any>} info the `info` trait
 * @returns {string}
 */
export function badgeText(info) {
  if (!info.provisional) return "";
  if (info.method === info.estimate_for) return "refining: the exact ranking is on the way";
  return `fast estimate (${info.method}); ${info.estimate_for} on the way`;
}

/**
 * The heading: method, layer, class and number of units.
 * @param {Record<string, any>} info the `info` trait
 * @returns {string}
 */
export function titleOf(info) {
  const target = info.target_name === null || info.target_name === undefined ? "all classes" : `class ${info.target_name}`;
  return `${info.method ?? ""} · layer ${info.layer ?? ""} · ${target} · ${info.units ?? 0} units`;
}

/**
 * The rank a navigation key moves the selection to, or null for any other key.
 * @param {string} key e.g. "ArrowDown"
 * @param {number} current the selected unit's rank (-1: none)
 * @param {number} count number of units
 * @returns {number | null}
 */
export function rankAfterKey(key, current, count) {
  /** @type {Record<string, number>} */
  const moves = {
    ArrowDown: current + 1,
    ArrowUp: current - 1,
    PageDown: current + VIEW_ROWS,
    PageUp: current - VIEW_ROWS,
    Home: 0,
    End: count - 1,
  };
  return key in moves ? Math.max(0, Math.min(count - 1, moves[key])) : null;
}

/** @param {string} label @param {HTMLElement} control */
function field(label, control) {
  return h("label", { class: "nw-field" }, [h("span", { text: label }), control]);
}

/**
 * Build the view's elements.
 * @param {HTMLElement} status the status strip
 * @returns {Parts}
 */
function build(status) {
  const method = h("select", { class: "nw-select", attrs: { "aria-label": "ranking method" } });
  const target = h("select", { class: "nw-select", attrs: { "aria-label": "class" } });
  const layer = h("select", { class: "nw-select", attrs: { "aria-label": "layer" } });
  const matchesId = `nw-matches-${Math.random().toString(36).slice(2, 8)}`;
  const search = h("input", {
    class: "nw-search nw-class-search",
    attrs: {
      type: "text", role: "combobox", "aria-label": "class (type to search)", "aria-autocomplete": "list",
      "aria-expanded": "false", "aria-controls": matchesId, autocomplete: "off", spellcheck: "false", placeholder: "all classes",
    },
  });
  const matches = h("div", { class: "nw-matches", attrs: { role: "listbox", id: matchesId, "aria-label": "matching classes" } });
  matches.hidden = true;
  const targetField = field("class", target);
  const searchField = h("div", { class: "nw-field nw-combo" }, [h("span", { text: "class" }), search, matches]);
  const warnings = h("div", { class: "nw-warnings", attrs: { role: "status" } });
  warnings.hidden = true;
  const prompt = h("div", { class: "nw-prompt", attrs: { role: "status" } });
  prompt.hidden = true;
  const image = h("input", {
    class: "nw-number nw-image",
    attrs: { type: "number", min: 0, step: 1, "aria-label": "image the method explains" },
  });
  const imageField = field("image", image);
  const refresh = h("button", {
    class: "nw-button nw-refresh",
    text: "↻ Refresh",
    attrs: { type: "button", title: "rank again (after the model changed)" },
  });
  const title = h("div", { class: "nw-title" });
  const badge = h("span", { class: "nw-badge" });
  const sample = h("span", { class: "nw-sample", attrs: { role: "status" } });
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
  const root = h("div", { class: "nw-root nw-ranked-list" }, [
    h("div", { class: "nw-controls" }, [field("method", method), targetField, searchField, field("layer", layer), imageField, refresh]),
    h("div", { class: "nw-heading" }, [title, badge, sample]),
    warnings,
    prompt,
    status,
    h("div", { class: "nw-list-wrap" }, [viewport, tip]),
  ]);
  return {
    root, method, target, search, matches, targetField, searchField, warnings, prompt, layer, image, imageField, refresh, title, badge,
    sample, spacer, viewport, tip, tipText, tipImage,
  };
}

/**
 * Put the pickers on the model's values; a fixed ranking disables them, a method without a class-specific
 * variant disables the class picker, and the image picker shows only for methods that explain one image.
 * @param {Model} model
 * @param {Parts} parts
 */
function syncControls(model, parts) {
  const interactive = model.get("interactive");
  /** @type {MethodInfo[]} */
  const methods = model.get("methods") || [];
  const current = methods.find((m) => m.name === model.get("method"));
  setOptions(parts.method, methods.map((m) => [m.name, m.needs_target ? `${m.name} (one class)` : m.name]), model.get("method"));
  parts.method.title = current?.description ?? "";
  /** @type {string[]} */
  const classes = model.get("classes") || [];
  const searchable = classes.length > SEARCH_FROM;
  parts.targetField.hidden = searchable;
  parts.searchField.hidden = !searchable;
  /** @type {[string, string][]} */
  const targets = searchable ? [] : [["", "all classes"], ...classes.map((name, i) => /** @type {[string, string]} */ ([String(i), name]))];
  setOptions(parts.target, targets, String(model.get("target") ?? ""));
  /** @type {string[]} */
  const layers = model.get("layers") || [];
  setOptions(parts.layer, layers.map((name) => [name, name]), model.get("layer"));
  parts.imageField.hidden = !current?.needs_image;
  if (document.activeElement !== parts.image) parts.image.value = String(model.get("image") ?? 0);
  parts.method.disabled = !interactive;
  parts.target.disabled = !interactive || !current?.takes_target;
  parts.search.disabled = parts.target.disabled;
  parts.layer.disabled = !interactive;
  parts.image.disabled = !interactive;
  parts.refresh.disabled = !interactive;
}

/**
 * Where ``value`` lies on the bars' scale, in percent of the track (0 to 100).
 * @param {Shown} shown @param {number} value
 */
function place(shown, value) {
  return Math.max(0, Math.min(100, (100 * (value - shown.lo)) / (shown.hi - shown.lo)));
}

/**
 * The whisker of a unit's interval on the bars' scale; an end beyond the track is drawn open (no cap).
 * @param {Shown} shown @param {number} unit
 * @returns {HTMLElement | null} null for a unit without an interval (an exact ranking)
 */
function whisker(shown, unit) {
  if (!shown.intervals) return null;
  const lower = shown.intervals[2 * unit];
  const upper = shown.intervals[2 * unit + 1];
  const left = place(shown, lower);
  const right = place(shown, upper);
  const open = `${lower < shown.lo ? " nw-open-lo" : ""}${upper > shown.hi ? " nw-open-hi" : ""}`;
  const el = h("span", { class: `nw-whisker${open}` });
  el.style.left = `${left.toFixed(1)}%`;
  el.style.width = `${(right - left).toFixed(1)}%`;
  return el;
}

/**
 * The settled mark of a row, for a ranking that says which places are settled (else null).
 * @param {Shown} shown @param {number} unit @returns {HTMLElement | null}
 */
function settledMark(shown, unit) {
  if (!shown.settled) return null;
  if (!shown.settled[unit]) return h("span", { class: "nw-settled" });
  const where = shown.topSet.has(unit) ? "in" : "out of";
  return h("span", {
    class: "nw-settled nw-is-settled",
    text: "✓",
    attrs: { title: `place settled: ${where} the top ${shown.topSet.size}`, "aria-label": `settled, ${where} the top ${shown.topSet.size}` },
  });
}

/**
 * What the tooltip says of a unit: rank, score, and an estimate's interval and settled place.
 * @param {Shown} shown @param {number} unit @returns {string}
 */
export function unitSummary(shown, unit) {
  const parts = [`unit ${unit}`, `rank ${shown.rankOf[unit] + 1}`, `score ${score(shown.scores[unit])}`];
  if (shown.labels[unit]) parts.push(shown.labelTitles[unit] || shown.labels[unit]);
  if (shown.intervals) parts.push(`interval ${score(shown.intervals[2 * unit])} to ${score(shown.intervals[2 * unit + 1])}`);
  if (shown.settled?.[unit]) parts.push("place settled");
  return parts.join(" · ");
}

/**
 * A row's label cell (text, never markup: labels are the user's strings), for a ranking with labels (else null).
 * @param {Shown} shown @param {number} unit @returns {HTMLElement | null}
 */
function labelCell(shown, unit) {
  if (!shown.labels.length) return null;
  const text = shown.labels[unit] ?? "";
  return h("span", { class: "nw-label", text, attrs: { title: shown.labelTitles[unit] || text } });
}

/**
 * One row: rank, (settled mark,) unit, (label,) score bar with the interval's whisker, and score.
 * @param {Shown} shown @param {number} rank @param {number | null} selected @param {string} idPrefix
 * @returns {HTMLElement}
 */
function row(shown, rank, selected, idPrefix) {
  const unit = shown.order[rank];
  const value = shown.scores[unit];
  const bar = h("span", { class: "nw-bar" });
  bar.style.width = `${place(shown, value).toFixed(1)}%`;
  const mark = settledMark(shown, unit);
  const range = whisker(shown, unit);
  const label = labelCell(shown, unit);
  const el = h(
    "div",
    {
      class: `nw-row${unit === selected ? " nw-selected" : ""}`,
      attrs: { role: "option", id: `${idPrefix}${unit}`, "aria-selected": String(unit === selected), "data-unit": unit, "data-rank": rank },
    },
    [
      h("span", { class: "nw-rank", text: String(rank + 1) }),
      ...(mark ? [mark] : []),
      h("span", { class: "nw-unit", text: `unit ${unit}` }),
      ...(label ? [label] : []),
      h("span", { class: "nw-bar-track" }, range ? [bar, range] : [bar]),
      h("span", { class: "nw-score", text: score(value) }),
    ],
  );
  el.style.top = `${rank * ROW_HEIGHT}px`;
  return el;
}

/**
 * Whether two rankings list the units in the same order (a new ranking scrolls back to its first rank).
 * @param {ArrayLike<number>} a @param {ArrayLike<number>} b
 */
function sameOrder(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Whether ``info`` refines the provisional ranking ``before`` described: the same method, layer and class.
 * @param {Record<string, any>} before @param {Record<string, any>} info
 */
function refines(before, info) {
  return Boolean(before.provisional) && ["method", "layer", "target"].every((key) => before[key] === info[key]);
}

/**
 * Draw only the rows in view (plus a margin): cheap for any number of units.
 * @param {Parts} parts @param {Shown} shown @param {number | null} selected @param {string} idPrefix
 */
function drawRows(parts, shown, selected, idPrefix) {
  const first = Math.max(0, Math.floor(parts.viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(shown.order.length, first + VIEW_ROWS + 2 * OVERSCAN);
  const rows = [];
  for (let rank = first; rank < last; rank++) rows.push(row(shown, rank, selected, idPrefix));
  parts.spacer.replaceChildren(...rows);
  if (selected !== null) parts.viewport.setAttribute("aria-activedescendant", `${idPrefix}${selected}`);
  else parts.viewport.removeAttribute("aria-activedescendant");
}

/**
 * Scroll the viewport just enough to show the row of ``rank``.
 * @param {HTMLElement} viewport @param {number} rank
 */
function scrollToRank(viewport, rank) {
  const top = rank * ROW_HEIGHT;
  const height = VIEW_ROWS * ROW_HEIGHT;
  if (top < viewport.scrollTop) viewport.scrollTop = top;
  else if (top + ROW_HEIGHT > viewport.scrollTop + height) viewport.scrollTop = top + ROW_HEIGHT - height;
}

/**
 * The unit of the row an event happened in, or null.
 * @param {Event} event
 * @returns {number | null}
 */
function unitOf(event) {
  const target = /** @type {HTMLElement | null} */ (event.target);
  const el = target?.closest?.(".nw-row");
  return el instanceof HTMLElement ? Number(el.dataset.unit) : null;
}

/**
 * The options the class search lists for ``query``: "all classes" while nothing is typed, then the matching
 * classes best first, at most ``limit``; ``more`` counts the matches left out.
 * @param {readonly string[]} classes @param {string} query @param {number} [limit]
 * @returns {{ options: { value: number | null, name: string }[], more: number }}
 */
export function classOptions(classes, query, limit = MATCHES_SHOWN) {
  const found = searchNames(classes, query);
  const options = found.slice(0, limit).map((i) => ({ value: /** @type {number | null} */ (i), name: classes[i] }));
  if (!query.trim()) options.unshift({ value: null, name: "all classes" });
  return { options, more: Math.max(0, found.length - limit) };
}

/**
 * The class picker for many classes: a text box that lists the matching classes as the user types; arrows
 * move through them, Enter picks, Escape gives up (the keys it uses go no further, e.g. not to JupyterLab).
 * @param {Model} model @param {Parts} parts
 */
function classSearch(model, parts) {
  const { search, matches } = parts;
  /** @type {{ value: number | null, name: string }[]} */
  let options = [];
  let active = -1;
  const idOf = (/** @type {number} */ i) => `${matches.id}-${i}`;
  /** @type {() => string[]} */
  const classes = () => model.get("classes") || [];
  const nameOf = (/** @type {number | null | undefined} */ target) =>
    target === null || target === undefined ? "" : (classes()[target] ?? String(target));

  /** Show the chosen class in the box (while the user is not typing in it). */
  function sync() {
    if (document.activeElement !== search) search.value = nameOf(model.get("target"));
  }

  function close() {
    matches.hidden = true;
    search.setAttribute("aria-expanded", "false");
    search.removeAttribute("aria-activedescendant");
  }

  /** @param {number} index */
  function activate(index) {
    active = index;
    for (const el of matches.querySelectorAll(".nw-match")) {
      const on = Number(/** @type {HTMLElement} */ (el).dataset.position) === index;
      el.classList.toggle("nw-active", on);
      el.setAttribute("aria-selected", String(on));
      if (on) /** @type {HTMLElement} */ (el).scrollIntoView?.({ block: "nearest" });
    }
    if (index >= 0) search.setAttribute("aria-activedescendant", idOf(index));
    else search.removeAttribute("aria-activedescendant");
  }

  function open() {
    const query = search.value === nameOf(model.get("target")) ? "" : search.value; // the shown name is no query
    const found = classOptions(classes(), query);
    options = found.options;
    const items = options.map((option, i) =>
      h("div", {
        class: `nw-match${option.value === null ? " nw-muted" : ""}`,
        text: option.name,
        attrs: { role: "option", id: idOf(i), "data-position": i, "data-class": option.value ?? "", "aria-selected": "false" },
      }),
    );
    if (!options.length) items.push(h("div", { class: "nw-match-note", text: `no class matches “${query.trim()}”` }));
    if (found.more) items.push(h("div", { class: "nw-match-note", text: `${found.more.toLocaleString("en-US")} more: type more to narrow` }));
    matches.replaceChildren(...items);
    matches.hidden = false;
    search.setAttribute("aria-expanded", "true");
    activate(query && options.length ? 0 : -1);
  }

  /** @param {number} index */
  function pick(index) {
    const option = options[index];
    if (!option) return;
    close();
    search.value = option.value === null ? "" : option.name;
    setTrait(model, "target", option.value);
  }

  /** @param {KeyboardEvent} event */
  function onKey(event) {
    const last = options.length - 1;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (matches.hidden) open();
      else activate(event.key === "ArrowDown" ? Math.min(last, active + 1) : Math.max(0, active - 1));
    } else if (event.key === "Enter") {
      if (!matches.hidden && active >= 0) pick(active);
      else if (!matches.hidden && options.length === 1) pick(0);
      else return;
    } else if (event.key === "Escape") {
      close();
      search.value = nameOf(model.get("target"));
    } else {
      event.stopPropagation(); // typing is ours too (notebook shortcuts such as "a" or "m" must not fire)
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  }

  /** @param {MouseEvent} event */
  function onPointer(event) {
    const el = /** @type {HTMLElement | null} */ (event.target)?.closest?.(".nw-match");
    if (!(el instanceof HTMLElement)) return;
    event.preventDefault(); // keep the focus in the box until the pick is done
    pick(Number(el.dataset.position));
  }

  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let blurred;
  let justFocused = false;
  let restoring = false; // a blur whose focus may come back at once (the view's re-creation)
  let wasOpen = false;
  function onFocus() {
    clearTimeout(blurred);
    if (restoring) {
      restoring = false; // the re-created view got the focus back: as it was, list open or closed
      if (wasOpen) open();
      return;
    }
    if (search.value === nameOf(model.get("target"))) {
      search.select(); // the chosen name is replaced by what is typed
      justFocused = true;
    }
    open(); // a query typed before a view's re-creation moved the box is kept
  }
  /** @param {MouseEvent} event */
  function onMouseUp(event) {
    if (justFocused) event.preventDefault(); // the click that focused the box must not undo the selection
    justFocused = false;
  }
  // The kernel's picture refresh re-creates the view, which detaches the box (a blur) and focuses it again at
  // once (lib/lasting.js): give up the query only if the focus really went elsewhere.
  function onBlur() {
    clearTimeout(blurred);
    restoring = true;
    wasOpen = !matches.hidden;
    blurred = setTimeout(() => {
      restoring = false;
      if (document.activeElement === search) return;
      close();
      search.value = nameOf(model.get("target"));
    }, 150);
  }

  const cleanup = teardown([
    on(search, "focus", onFocus),
    on(search, "mouseup", onMouseUp),
    on(search, "click", () => matches.hidden && onFocus()), // clicked again after a pick: search afresh
    on(search, "input", open),
    on(search, "keydown", onKey),
    on(search, "blur", onBlur),
    on(matches, "mousedown", onPointer),
    () => clearTimeout(blurred),
  ]);
  return { sync, cleanup };
}

/**
 * The hover tooltip: rank and score at once, the unit's thumbnail once the kernel sent it (cached per layer).
 * @param {Model} model @param {Parts} parts @param {() => Shown} shown
 */
function tooltip(model, parts, shown) {
  /** @type {Map<number, DataView>} unit -> thumbnail PNG bytes, for the current layer */
  const thumbs = new Map();
  /** @type {number | null} */
  let hovered = null;

  /** @param {number | null} unit */
  function show(unit) {
    if (unit === hovered) return;
    hovered = unit;
    parts.tip.hidden = unit === null;
    if (unit === null) return;
    const rank = shown().rankOf[unit];
    parts.tipText.textContent = unitSummary(shown(), unit);
    parts.tip.style.top = `${rank * ROW_HEIGHT - parts.viewport.scrollTop + ROW_HEIGHT}px`;
    const png = thumbs.get(unit);
    parts.tipImage.hidden = !png;
    if (png) showPng(parts.tipImage, png);
    else if (model.get("interactive")) model.send({ type: "thumbnail", unit });
  }

  /** @param {any} msg @param {DataView[]} buffers */
  function received(msg, buffers) {
    if (!msg || msg.type !== "thumbnail" || msg.layer !== model.get("layer") || !buffers?.length) return;
    thumbs.set(msg.unit, buffers[0]);
    if (hovered === msg.unit) {
      showPng(parts.tipImage, buffers[0]);
      parts.tipImage.hidden = false;
    }
  }

  function forget() {
    thumbs.clear();
  }

  return { show, received, forget, hide: () => show(null) };
}

/** @param {{ model: Model, el: HTMLElement }} ctx */
function render({ model, el }) {
  const status = statusStrip(model, { cancellable: true });
  const parts = build(status.el);
  const idPrefix = `nw-unit-${Math.random().toString(36).slice(2, 8)}-`;
  let shown = decodeRanking(model);
  const tip = tooltip(model, parts, () => shown);
  const picker = classSearch(model, parts);
  el.replaceChildren(parts.root);

  const selected = () => model.get("selected_unit") ?? null;
  const redraw = () => drawRows(parts, shown, selected(), idPrefix);
  let shownInfo = {};
  const syncRanking = () => {
    const before = shown.order;
    shown = decodeRanking(model);
    const info = model.get("info") || {};
    // a new ranking starts at rank 1; a refined estimate of the same one keeps the place the user scrolled to
    if (!sameOrder(before, shown.order) && !refines(shownInfo, info)) parts.viewport.scrollTop = 0;
    shownInfo = info;
    parts.title.textContent = titleOf(info);
    parts.badge.textContent = badgeText(info);
    parts.badge.hidden = !info.provisional;
    parts.sample.textContent = sampleStatus(info);
    parts.sample.hidden = !parts.sample.textContent;
    parts.viewport.classList.toggle("nw-marked", Boolean(shown.settled));
    parts.viewport.classList.toggle("nw-labelled", shown.labels.length > 0);
    /** @type {string[]} */
    const warnings = info.warnings || [];
    parts.warnings.replaceChildren(...warnings.map((text) => h("div", { class: "nw-warning", text: `⚠ ${text}` })));
    parts.warnings.hidden = !warnings.length;
    parts.spacer.style.height = `${shown.order.length * ROW_HEIGHT}px`;
    tip.hide(); // a tooltip from the previous ranking would show a stale rank and score
    redraw();
  };
  /** @param {number} unit */
  const select = (unit) => {
    setTrait(model, "selected_unit", unit);
    redraw();
  };
  /** @param {MouseEvent} event */
  const onClick = (event) => {
    const unit = unitOf(event);
    if (unit === null) return;
    parts.viewport.focus();
    select(unit);
  };
  /** @param {KeyboardEvent} event */
  const onKey = (event) => {
    const unit = selected();
    const rank = rankAfterKey(event.key, unit === null ? -1 : shown.rankOf[unit], shown.order.length);
    if (rank === null || !shown.order.length) return;
    event.preventDefault();
    event.stopPropagation(); // the notebook must not move between cells too
    scrollToRank(parts.viewport, rank);
    select(shown.order[rank]);
  };
  /**
   * The list's keys, claimed before the host sees them. Lumino runs JupyterLab's shortcuts in the bubbling phase
   * (after onKey's stopPropagation) but Notebook 7's in the capture phase on document, before the list: there
   * ArrowUp/ArrowDown moved the active cell and were stopped. A capture listener on window runs before that,
   * and lumino skips a keydown whose default is prevented; the host's other shortcuts keep working.
   * @param {KeyboardEvent} event
   */
  const claimKey = (event) => {
    if (event.composedPath()[0] !== parts.viewport || !shown.order.length) return;
    if (rankAfterKey(event.key, 0, shown.order.length) !== null) event.preventDefault();
  };
  window.addEventListener("keydown", claimKey, true);
  const onImage = () => {
    const value = Number(parts.image.value);
    if (parts.image.value.trim() !== "" && Number.isInteger(value)) setTrait(model, "image", value);
  };
  const onRefresh = () => {
    tip.forget();
    model.send({ type: "refresh" });
  };
  const syncAll = () => {
    syncControls(model, parts);
    picker.sync();
    const asked = model.get("prompt") || "";
    const asking = Boolean(asked) && parts.prompt.hidden;
    parts.prompt.textContent = asked;
    parts.prompt.hidden = !asked;
    // the method just picked here needs a class: the class picker takes the focus, to ask for one
    if (asking && document.activeElement === parts.method) (parts.searchField.hidden ? parts.target : parts.search).focus();
  };

  const cleanup = teardown([
    on(parts.method, "change", () => setTrait(model, "method", parts.method.value)),
    on(parts.target, "change", () => setTrait(model, "target", parts.target.value === "" ? null : Number(parts.target.value))),
    on(parts.layer, "change", () => setTrait(model, "layer", parts.layer.value)),
    on(parts.image, "change", onImage),
    on(parts.refresh, "click", onRefresh),
    on(parts.viewport, "click", onClick),
    on(parts.viewport, "keydown", onKey),
    () => window.removeEventListener("keydown", claimKey, true),
    on(parts.viewport, "scroll", redraw),
    on(parts.viewport, "mousemove", (event) => tip.show(unitOf(event))),
    on(parts.viewport, "mouseleave", tip.hide),
    listen(model, ["msg:custom"], tip.received),
    redrawOn(model, ["change:methods", "change:method", "change:target", "change:classes", "change:layers", "change:layer", "change:image", "change:interactive", "change:prompt"], syncAll),
    redrawOn(model, ["change:scores", "change:order", "change:intervals", "change:settled", "change:info", "change:label_texts", "change:label_titles"], syncRanking),
    redrawOn(model, ["change:selected_unit"], redraw),
    listen(model, ["change:layer"], tip.forget),
    status.cleanup,
    picker.cleanup,
    tip.forget,
  ]);
  syncAll();
  syncRanking();
  return cleanup;
}

export default { render: lasting(render) };

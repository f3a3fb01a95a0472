// @ts-check
/** Safe DOM building: text from Python is only ever set with textContent, never parsed as HTML. */

/**
 * @typedef {Object} Props
 * @property {string} [class] class names
 * @property {string} [text] text content (inserted as text)
 * @property {Record<string, string | number | boolean | null | undefined>} [attrs] attributes (null/false: omitted)
 * @property {Record<string, EventListener>} [on] event listeners
 */

/**
 * Create an element.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props} [props]
 * @param {(Node | string | null | undefined | false)[]} [children] strings become text nodes
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  if (props.class) el.className = props.class;
  if (props.text !== undefined) el.textContent = props.text;
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const [type, listener] of Object.entries(props.on ?? {})) el.addEventListener(type, listener);
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

/**
 * Replace the options of a <select>, keeping the value if it is still offered.
 * @param {HTMLSelectElement} select
 * @param {[string, string][]} options [value, label] pairs; labels are inserted as text
 * @param {string} value the value to select
 */
export function setOptions(select, options, value) {
  select.replaceChildren(...options.map(([v, label]) => h("option", { text: label, attrs: { value: v } })));
  select.value = value;
}

/**
 * Listen to a DOM event; returns a function that removes the listener (so it is written once, not twice).
 * @template {keyof HTMLElementEventMap} K
 * @param {HTMLElement} target
 * @param {K} type e.g. "change"
 * @param {(event: HTMLElementEventMap[K]) => void} handler
 * @returns {() => void}
 */
export function on(target, type, handler) {
  target.addEventListener(type, handler);
  return () => target.removeEventListener(type, handler);
}

/**
 * Listen to model changes; returns a function that removes the listeners.
 * @param {{ on(event: string, handler: any): void, off(event: string, handler: any): void }} model
 * @param {string[]} events e.g. ["change:scores", "msg:custom"]
 * @param {(...args: any[]) => void} handler
 * @returns {() => void}
 */
export function listen(model, events, handler) {
  for (const event of events) model.on(event, handler);
  return () => {
    for (const event of events) model.off(event, handler);
  };
}

/**
 * `fn` run once, in a microtask, however often the returned function is called before that: one kernel update
 * sets several traits, each with its own change event, and the view should redraw once, from the state as a
 * whole (not once per trait, from a half-updated state). `cancel()` drops a pending run and all later ones.
 * @param {() => void} fn
 * @returns {(() => void) & { cancel: () => void }}
 */
export function coalesced(fn) {
  let pending = false;
  let live = true;
  const run = () => {
    pending = false;
    if (live) fn();
  };
  const schedule = () => {
    if (pending || !live) return;
    pending = true;
    queueMicrotask(run);
  };
  return Object.assign(schedule, {
    cancel: () => {
      live = false;
    },
  });
}

/**
 * Redraw with `draw` after model changes: once per burst of ``events`` (see `coalesced`), never after the
 * returned cleanup ran (it removes the listeners and drops a pending redraw).
 * @param {{ on(event: string, handler: any): void, off(event: string, handler: any): void }} model
 * @param {string[]} events e.g. ["change:tiles", "change:vrange"]
 * @param {() => void} draw
 * @returns {() => void}
 */
export function redrawOn(model, events, draw) {
  const run = coalesced(draw);
  const off = listen(model, events, run);
  return () => {
    off();
    run.cancel();
  };
}

/**
 * `fn` at once, then at most once per `interval` ms, always with the latest arguments (the last call is never
 * lost: it runs when the interval is over): a slider dragged across sixty values a second asks the kernel about
 * ten times, its final value included. `flush()` runs a waiting call now; `cancel()` drops it.
 * @template {any[]} A
 * @param {(...args: A) => void} fn
 * @param {number} interval milliseconds
 * @returns {((...args: A) => void) & { flush: () => void, cancel: () => void }}
 */
export function throttled(fn, interval) {
  let last = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let timer = null;
  /** @type {A | null} */
  let waiting = null;
  const run = () => {
    timer = null;
    last = performance.now();
    const args = waiting;
    waiting = null;
    if (args) fn(...args);
  };
  /** @param {A} args */
  const call = (...args) => {
    waiting = args;
    if (timer !== null) return;
    const wait = last + interval - performance.now();
    if (wait <= 0) run();
    else timer = setTimeout(run, wait);
  };
  const stop = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  return Object.assign(call, {
    flush: () => {
      if (timer === null) return;
      stop();
      run();
    },
    cancel: () => {
      stop();
      waiting = null;
    },
  });
}

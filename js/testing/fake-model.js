// @ts-check
/** A fake anywidget model for unit tests: records what the view sets and sends, and plays the kernel. */

export class FakeModel {
  /** @param {Record<string, any>} state */
  constructor(state) {
    this.state = { ...state };
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {any[]} messages the view sent */
    this.sent = [];
    /** @type {Record<string, any>[]} state the view saved */
    this.saved = [];
    /** @type {Record<string, any>} */
    this.pendingChanges = {};
  }

  /** @param {string} key */
  get(key) {
    return this.state[key];
  }

  /** @param {string} key @param {any} value */
  set(key, value) {
    this.state[key] = value;
    this.pendingChanges[key] = value;
    this.emit(`change:${key}`);
  }

  save_changes() {
    this.saved.push(this.pendingChanges);
    this.pendingChanges = {};
  }

  /** @param {any} content */
  send(content) {
    this.sent.push(content);
  }

  /** @param {string} event @param {Function} handler */
  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)?.add(handler);
  }

  /** @param {string} event @param {Function} handler */
  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
  }

  /** @param {string} event @param {...any} args */
  emit(event, ...args) {
    for (const handler of [...(this.handlers.get(event) ?? [])]) handler(...args);
  }

  /**
   * The kernel changes traits; resolves once the views have redrawn (they redraw in a microtask, once per
   * update). @param {Record<string, any>} changes
   */
  pythonSet(changes) {
    Object.assign(this.state, changes);
    for (const key of Object.keys(changes)) this.emit(`change:${key}`);
    return settled();
  }

  /** The kernel sends a custom message. @param {any} msg @param {DataView[]} [buffers] */
  pythonSend(msg, buffers = []) {
    this.emit("msg:custom", msg, buffers);
  }

  listenerCount() {
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }
}

/**
 * Render a widget's view on a fake model holding ``traits`` and the status traits every widget has (idle).
 * @param {{ render: Function }} widget @param {Record<string, any>} traits
 */
export function mount(widget, traits) {
  const model = new FakeModel({ status: "idle", progress: {}, error: "", ...traits });
  const el = document.createElement("div");
  const cleanup = widget.render({ model, el });
  return { model, el, cleanup };
}

/**
 * An array as the kernel sends it (``{view, dtype, shape}``, `neuronwidgets/widgets/_arrays.py`).
 * @param {ArrayLike<number>} values (flat, C order) @param {"float64" | "float32" | "int32" | "uint8"} dtype
 * @param {number[]} [shape] e.g. [units, 2] for the list's intervals
 * @returns {import("../lib/model.js").EncodedArray}
 */
export function encoded(values, dtype, shape = [values.length]) {
  const types = { float64: Float64Array, float32: Float32Array, int32: Int32Array, uint8: Uint8Array };
  const array = types[dtype].from(values);
  return { view: new DataView(array.buffer), dtype, shape };
}

/** A tiny valid-looking PNG buffer (content does not matter to the views). */
export const PNG = new DataView(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).buffer);

/** Resolves after every pending microtask (the views' coalesced redraws) has run. */
export function settled() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The browser finished loading these images (fires their load events). @param {Iterable<Element>} images */
export function loaded(images) {
  for (const img of images) img.dispatchEvent(new Event("load"));
}

// @ts-check
/** What every view does with its model: set a trait from the browser, decode arrays, undo its own setup. */

/** @typedef {import("@anywidget/types").AnyModel<any>} Model */

/**
 * Set a trait and send it to the kernel (which validates it and may send back its own value).
 * @param {Model} model
 * @param {string} name
 * @param {unknown} value
 */
export function setTrait(model, name, value) {
  model.set(name, value);
  model.save_changes();
}

/** The typed array for each numpy dtype name the kernel sends (`neuronwidgets/widgets/_arrays.py`). */
const ARRAY_TYPES = {
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  float32: Float32Array,
  float64: Float64Array,
};

/** @typedef {Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | Float32Array | Float64Array} NumberArray */

/**
 * An array as the kernel sends it: its bytes, numpy dtype name and shape.
 * @typedef {Object} EncodedArray
 * @property {DataView} view the bytes (little-endian, C order)
 * @property {string} dtype e.g. "float64", "int32"
 * @property {number[]} shape e.g. [units]
 */

/**
 * Decode an `EncodedArray` into a typed array (a copy, aligned whatever the buffer's offset) and its shape;
 * nothing (null, undefined) decodes to an empty array. A dtype or size that does not match is an error.
 * @param {EncodedArray | null | undefined} value
 * @returns {{ data: NumberArray, shape: number[] }}
 */
export function decodeArray(value) {
  if (value === null || value === undefined) return { data: new Float64Array(0), shape: [0] };
  const { view, dtype, shape } = value;
  const ArrayType = ARRAY_TYPES[/** @type {keyof typeof ARRAY_TYPES} */ (dtype)];
  if (!ArrayType) throw new TypeError(`unsupported array dtype ${JSON.stringify(dtype)}`);
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice().buffer;
  const size = shape.reduce((a, b) => a * b, 1);
  if (bytes.byteLength !== size * ArrayType.BYTES_PER_ELEMENT) {
    throw new RangeError(`array of ${dtype} ${JSON.stringify(shape)} needs ${size * ArrayType.BYTES_PER_ELEMENT} bytes, got ${bytes.byteLength}`);
  }
  return { data: new ArrayType(bytes), shape: [...shape] };
}

/**
 * One cleanup for a view: runs each step once (the last set up, the first undone); later calls do nothing.
 * @param {(() => void)[]} steps
 * @returns {() => void}
 */
export function teardown(steps) {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    for (const step of [...steps].reverse()) step();
  };
}

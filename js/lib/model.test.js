import { describe, expect, it } from "vitest";
import { FakeModel } from "../testing/fake-model.js";
import { decodeArray, setTrait, teardown } from "./model.js";

describe("model helpers", () => {
  it("decodes an array by its dtype and shape, wherever its bytes start", () => {
    const bytes = new Uint8Array(3 + 4 * 8);
    const values = new Float64Array([1.5, -2, 3.25, 1e300]);
    // a view at an odd offset (as a message's buffer may be): not aligned for a Float64Array
    bytes.set(new Uint8Array(values.buffer), 3);
    const { data, shape } = decodeArray({ view: new DataView(bytes.buffer, 3, 32), dtype: "float64", shape: [2, 2] });
    expect(data).toBeInstanceOf(Float64Array);
    expect([...data]).toEqual([1.5, -2, 3.25, 1e300]);
    expect(shape).toEqual([2, 2]);
    const ints = decodeArray({ view: new DataView(Int32Array.from([7, -1]).buffer), dtype: "int32", shape: [2] });
    expect(ints.data).toBeInstanceOf(Int32Array);
    expect([...ints.data]).toEqual([7, -1]);
    expect(decodeArray(null).data.length).toBe(0);
  });

  it("refuses an unknown dtype or a size that does not match the shape", () => {
    const view = new DataView(new ArrayBuffer(8));
    expect(() => decodeArray({ view, dtype: "complex128", shape: [1] })).toThrow(/unsupported array dtype/);
    expect(() => decodeArray({ view, dtype: "float32", shape: [3] })).toThrow(/needs 12 bytes, got 8/);
  });

  it("sets a trait and saves it in one call", () => {
    const model = new FakeModel({ k: 0 });
    setTrait(model, "k", 3);
    expect(model.get("k")).toBe(3);
    expect(model.saved).toEqual([{ k: 3 }]);
  });

  it("undoes every step once, the last set up first", () => {
    const undone = [];
    const cleanup = teardown([() => undone.push(1), () => undone.push(2)]);
    cleanup();
    cleanup();
    expect(undone).toEqual([2, 1]);
  });
});

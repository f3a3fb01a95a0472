import { describe, expect, it } from "vitest";
import { ALL_CLASSES_UP_TO, TOP_CLASSES, classChanges, classesToList } from "./classes.js";
import { searchNames } from "./search.js";

const IMAGENET_LIKE = ["tench", "goldfish", "great white shark", "Retriever mix", "golden retriever", "curly-coated retriever", "black-footed ferret", "Labrador retriever", "ret"];

describe("searchNames", () => {
  it("finds 'golden retriever' by 'ret': the whole name, then starts, then word starts, then anywhere", () => {
    const found = searchNames(IMAGENET_LIKE, "ret").map((i) => IMAGENET_LIKE[i]);
    expect(found).toEqual(["ret", "Retriever mix", "golden retriever", "curly-coated retriever", "Labrador retriever", "black-footed ferret"]);
  });

  it("is case-insensitive, trims, and matches every name in order for an empty query", () => {
    expect(searchNames(IMAGENET_LIKE, "  GOLDEN ")).toEqual([4]);
    expect(searchNames(["a", "b"], "")).toEqual([0, 1]);
    expect(searchNames(["a", "b"], "zzz")).toEqual([]);
  });

  it("takes a class index too, first", () => {
    expect(searchNames(["x1", "b", "c"], "1")).toEqual([1, 0]);
    expect(searchNames(["a"], "7")).toEqual([]); // no class 7, and no name with a 7
  });

  it("matches text with markup as text", () => {
    const names = ["<img src=x onerror=alert(1)>", "img"];
    expect(searchNames(names, "<img")).toEqual([0]);
    expect(searchNames(names, "img")).toEqual([1, 0]);
  });

  it("searches 1,000 names quickly", () => {
    const names = Array.from({ length: 1000 }, (_, i) => `class number ${i}`);
    names[207] = "golden retriever";
    const start = performance.now();
    for (let i = 0; i < 100; i++) searchNames(names, "ret");
    expect(searchNames(names, "ret")).toEqual([207]);
    expect((performance.now() - start) / 100).toBeLessThan(5); // ms per keystroke
  });
});

describe("classesToList", () => {
  const names = Array.from({ length: 1000 }, (_, i) => `c${i}`);
  const before = names.map(() => 0.5);
  const after = names.map((_, i) => (i % 100 === 0 ? 0.5 - i / 2000 : i === 7 ? 0.88 : 0.5));
  after[3] = null; // no image of class 3

  it("of many classes lists the top ones by size of change (a gain counts as much as a loss)", () => {
    const { rows, matching, sorted } = classesToList(names, classChanges(1000, before, after));
    expect(rows).toHaveLength(TOP_CLASSES);
    expect(matching).toBe(1000);
    expect(sorted).toBe(true);
    expect(rows.map((r) => r.index)).toEqual([900, 800, 7, 700, 600, 500, 400, 300, 200, 100]);
    expect(rows[2].change).toBeCloseTo(0.38);
  });

  it("lists all on request, ties in class order and classes without images last", () => {
    const { rows } = classesToList(names, classChanges(1000, before, after), { all: true });
    expect(rows).toHaveLength(1000);
    expect(rows[10].index).toBe(0); // no change: class order
    expect(rows.at(-1)).toEqual({ index: 3, before: 0.5, after: null, change: null });
  });

  it("searches all classes, most changed first", () => {
    const { rows, matching } = classesToList(names, classChanges(1000, before, after), { query: "c7" });
    expect(matching).toBe(111); // c7, c70..c79, c700..c799
    expect(rows).toHaveLength(111); // a search lists every match
    expect(rows.slice(0, 2).map((r) => r.index)).toEqual([7, 700]);
  });

  it("lists a few classes all, in their own order", () => {
    const few = names.slice(0, ALL_CLASSES_UP_TO);
    const { rows, sorted } = classesToList(few, classChanges(few.length, [0.1], [0.9]));
    expect(rows.map((r) => r.index)).toEqual([...few.keys()]);
    expect(sorted).toBe(false);
    expect(rows[0]).toEqual({ index: 0, before: 0.1, after: 0.9, change: 0.8 });
    expect(rows[1].change).toBeNull();
  });
});

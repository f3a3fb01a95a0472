// @ts-check
/** Which classes the ablation panel lists: all of a few, or the ones that changed most of many. */
import { searchNames } from "./search.js";

/** Up to this many classes, the panel lists them all in their own order; beyond, the top ones by change. */
export const ALL_CLASSES_UP_TO = 12;
/** Classes listed by default when there are more than ALL_CLASSES_UP_TO. */
export const TOP_CLASSES = 10;

/**
 * A class's accuracy before and after the ablation and their difference.
 * @typedef {{ index: number, before: number | null, after: number | null, change: number | null }} ClassChange
 */

/**
 * Each class's change of accuracy (``after - before``; null where the data has no image of the class).
 * @param {number} count number of classes
 * @param {(number | null | undefined)[] | undefined} before per-class accuracy without ablation
 * @param {(number | null | undefined)[] | undefined} after per-class accuracy with it
 * @returns {ClassChange[]}
 */
export function classChanges(count, before, after) {
  return Array.from({ length: count }, (_, index) => {
    const b = before?.[index] ?? null;
    const a = after?.[index] ?? null;
    return { index, before: b, after: a, change: a === null || b === null ? null : a - b };
  });
}

/**
 * The classes to list, and how many could be.
 * - a search (``query``): the matching classes, most changed first;
 * - ``all``, or no more than ALL_CLASSES_UP_TO classes: every class (a few in their own order, many by change);
 * - else the ``top`` classes whose accuracy changed most (by size of the change; ties and classes without
 *   images in class order, those without images last).
 * @param {readonly string[]} names class names
 * @param {ClassChange[]} changes from classChanges
 * @param {{ query?: string, all?: boolean, top?: number }} [options]
 * @returns {{ rows: ClassChange[], matching: number, sorted: boolean }} ``matching``: how many classes the
 *   search (or none) lets through; ``sorted``: whether rows are in order of change
 */
export function classesToList(names, changes, { query = "", all = false, top = TOP_CLASSES } = {}) {
  const searching = query.trim() !== "";
  if (!searching && names.length <= ALL_CLASSES_UP_TO) return { rows: changes, matching: changes.length, sorted: false };
  const candidates = searching ? searchNames(names, query).map((i) => changes[i]) : changes;
  const size = (/** @type {ClassChange} */ c) => (c.change === null ? -1 : Math.abs(c.change));
  const sorted = [...candidates].sort((a, b) => size(b) - size(a) || a.index - b.index);
  return { rows: all || searching ? sorted : sorted.slice(0, top), matching: candidates.length, sorted: true };
}

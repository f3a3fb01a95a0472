// @ts-check
/** Safe SVG building (text inserted as text) and the small scales the charts need. */

export const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * Create an SVG element.
 * @param {string} tag
 * @param {Record<string, string | number>} [attrs]
 * @param {(Node | null | undefined | false)[]} [children]
 * @param {string} [text] text content (inserted as text)
 * @returns {SVGElement}
 */
export function svg(tag, attrs = {}, children = [], text) {
  const el = /** @type {SVGElement} */ (document.createElementNS(SVG_NS, tag));
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  if (text !== undefined) el.textContent = text;
  for (const child of children) if (child) el.append(child);
  return el;
}

/**
 * A linear map from [d0, d1] to [r0, r1]; a degenerate domain maps to the middle of the range.
 * @param {number} d0 @param {number} d1 @param {number} r0 @param {number} r1
 * @returns {(x: number) => number}
 */
export function linear(d0, d1, r0, r1) {
  if (d1 === d0) return () => (r0 + r1) / 2;
  return (x) => r0 + ((x - d0) * (r1 - r0)) / (d1 - d0);
}

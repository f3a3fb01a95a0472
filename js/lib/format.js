// @ts-check
/** Number and time formatting shared by the widgets. */

/** @param {number | null | undefined} x @returns {string} */
export function score(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(2);
  return x.toFixed(a < 1 ? 4 : 2);
}

/** @param {number | null | undefined} x fraction in [0, 1] @returns {string} */
export function percent(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

/** @param {number | null | undefined} s seconds @returns {string} */
export function seconds(s) {
  if (s === null || s === undefined) return "estimating…";
  if (s < 60) return `${Math.ceil(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

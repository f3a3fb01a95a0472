// @ts-check
/** Finding class names by what the user types: "ret" finds "golden retriever" among 1,000 ImageNet classes. */

/**
 * How well ``name`` matches ``query`` (both lower case), lower is better, or -1 for no match: the whole name,
 * the start of the name, the start of a word in it, anywhere in it.
 * @param {string} name @param {string} query
 * @returns {number}
 */
function quality(name, query) {
  if (name === query) return 0;
  const at = name.indexOf(query);
  if (at === 0) return 1;
  if (at < 0) return -1;
  // the start of a later word ("ret" in "golden retriever", "shark" in "great white shark")
  for (let i = at; i >= 0; i = name.indexOf(query, i + 1)) if (/[^a-z0-9]/.test(name[i - 1])) return 2;
  return 3;
}

/**
 * The indices of the names that match ``query``, best first (whole name, start, word start, anywhere; ties
 * in index order). The query is trimmed and case-insensitive; an empty query matches every name in order. A
 * query that is a whole number also matches the class with that index, first.
 * @param {readonly string[]} names
 * @param {string} query
 * @returns {number[]}
 */
export function searchNames(names, query) {
  const q = query.trim().toLowerCase();
  if (!q) return names.map((_, i) => i);
  /** @type {[number, number][]} [quality, index] */
  const found = [];
  names.forEach((name, i) => {
    const rank = quality(String(name).toLowerCase(), q);
    if (rank >= 0) found.push([rank, i]);
  });
  found.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const indices = found.map(([, i]) => i);
  if (/^\d+$/.test(q) && Number(q) < names.length) {
    const index = Number(q);
    return [index, ...indices.filter((i) => i !== index)];
  }
  return indices;
}

// @ts-check
/** Unit numbers typed by the user: what the views send only once they name a unit of the layer. */

/**
 * The unit a unit field's text names, or why it names none: a whole number in 0..units-1.
 * @param {string} text what the field holds (a number field's value is "" for text that is not a number)
 * @param {number} units units in the layer
 * @param {boolean} [badInput] the field holds text that is not a number (its validity.badInput)
 * @returns {{ unit: number } | { refused: string }}
 */
export function parseUnit(text, units, badInput = false) {
  const value = text.trim();
  const range = units > 0 ? `a whole number in 0..${units - 1}` : "a whole number (the layer has no units)";
  if (badInput || value === "") return { refused: `unit must be ${range}` };
  const unit = Number(value);
  if (!Number.isInteger(unit) || unit < 0 || unit >= units) return { refused: `unit must be ${range}, got ${value}` };
  return { unit };
}

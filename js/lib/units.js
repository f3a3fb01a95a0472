// @ts-check
/** Unit numbers typed by the user: what the views send only once they name a unit of the layer. */
import { h } from "./dom.js";

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

/**
 * The note that says why a field's text was refused (not sent): a line of its own below the controls, so the
 * controls do not move, tied to the field for screen readers. `say(why)` shows it and marks the field invalid;
 * `say(null)` clears both.
 * @param {HTMLInputElement} field
 * @param {string} className the note's own class, besides nw-invalid-note
 * @returns {{ note: HTMLElement, say: (why: string | null) => void }}
 */
export function refusal(field, className) {
  const id = `nw-refusal-${Math.random().toString(36).slice(2, 8)}`;
  const note = h("div", { class: `nw-invalid-note ${className}`, attrs: { id, role: "alert" } });
  note.hidden = true;
  field.setAttribute("aria-describedby", id);
  /** @param {string | null} why */
  const say = (why) => {
    field.classList.toggle("nw-invalid", why !== null);
    if (why === null) field.removeAttribute("aria-invalid");
    else field.setAttribute("aria-invalid", "true");
    note.textContent = why ?? "";
    note.hidden = why === null;
  };
  return { note, say };
}

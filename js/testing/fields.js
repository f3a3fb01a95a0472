// @ts-check
/** Checks shared by the tests of the widgets' unit fields (js/lib/units.js). */
import { expect } from "vitest";

/**
 * Type each ``[text, reason]`` of ``cases`` into ``field`` and press Enter: each must be refused, its reason
 * shown in ``note``, the field marked invalid, and the text kept there to be corrected.
 * @param {HTMLInputElement} field
 * @param {HTMLElement} note
 * @param {[string, string][]} cases
 */
export function expectRefused(field, note, cases) {
  for (const [typed, why] of cases) {
    field.focus();
    field.value = typed;
    field.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
    expect(note.hidden, typed).toBe(false);
    expect(note.textContent).toBe(why);
    expect(field.classList.contains("nw-invalid")).toBe(true);
    expect(field.getAttribute("aria-invalid")).toBe("true");
    expect(field.value).toBe(typed);
  }
}

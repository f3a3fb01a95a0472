import { describe, expect, it } from "vitest";
import widget from "./activation-overlay.js";
import { parseUnit } from "./lib/units.js";
import { PNG, loaded, mount, settled } from "./testing/fake-model.js";
import { expectRefused } from "./testing/fields.js";

const EVIL = "<img src=x onerror=alert(1)>";
const tile = (index, chosen = false) => ({ index, label: EVIL, chosen, peak: 2, vmin: 0, vmax: 2, image: PNG, map: PNG, raw: PNG });

function setup() {
  return mount(widget, {
    unit: 3, units: 32, layer: EVIL, k: 2, image: null, colormap: "magma", colormaps: ["magma", "viridis"], colormaps_more: ["jet", EVIL], opacity: 0.6,
    scale: "shared", show_raw: false, image_count: 100, tiles: [tile(7), tile(9)], colorbar: PNG, vrange: [0, 2],
    shown: { unit: 3 }, mode: "activation", target: null, classes: ["zero", EVIL, "two"], diverging_colormap: "RdBu_r",
    diverging_colormaps: ["RdBu_r", "coolwarm"],
  });
}

describe("ActivationOverlay view", () => {
  it("shows each image with its map from PNG buffers, labels as text", async () => {
    const { el } = setup();
    const tiles = el.querySelectorAll(".nw-tile");
    expect(tiles.length).toBe(2);
    expect(tiles[0].querySelectorAll("img").length).toBe(3);
    expect(tiles[0].querySelector(".nw-map").getAttribute("src")).toMatch(/^blob:/);
    const lines = [...tiles[0].querySelectorAll("figcaption .nw-caption-line")].map((l) => l.textContent);
    expect(lines).toEqual([`#7 · ${EVIL}`, "peak 2.00"]); // two lines that never wrap; the title has it all
    expect(tiles[0].querySelector("figcaption").title).toBe(`#7 · ${EVIL} · peak 2.00`);
    expect(el.querySelector("img[src='x']")).toBeNull();
    expect(el.querySelector(".nw-title").textContent).toBe(`unit 3 · layer ${EVIL} · top 2 images`);
    expect(el.querySelector(".nw-tiles").dataset.unit).toBe("3");
  });

  it("offers the short list of colormaps first, the others on request", async () => {
    const { model, el } = setup();
    const menu = el.querySelector('select[aria-label="colormap"]');
    expect([...menu.options].map((o) => o.textContent)).toEqual(["magma", "viridis", "more… (2)"]);
    menu.value = menu.options[2].value;
    menu.dispatchEvent(new Event("change"));
    expect(model.saved).toEqual([]); // asking for more is not a choice
    expect([...menu.options].map((o) => o.textContent)).toEqual(["magma", "viridis", "jet", EVIL]);
    expect(menu.querySelector("optgroup").label).toBe("more colormaps");
    expect(menu.value).toBe("magma");
    const other = mount(widget, { ...model.state, colormap: "jet" }); // set in Python: the full list at once
    expect(other.el.querySelector('select[aria-label="colormap"]').value).toBe("jet");
  });

  it("changes opacity in the browser at once, and sends the other choices to the kernel", async () => {
    const { model, el } = setup();
    const opacity = el.querySelector(".nw-opacity");
    opacity.value = "0.25";
    opacity.dispatchEvent(new Event("input"));
    expect(el.querySelector(".nw-tiles").style.getPropertyValue("--nw-opacity")).toBe("0.25");
    expect(model.get("opacity")).toBe(0.25);
    const colormap = el.querySelector('select[aria-label="colormap"]');
    const scale = el.querySelector('select[aria-label="colour scale"]');
    colormap.value = "viridis";
    colormap.dispatchEvent(new Event("change"));
    scale.value = "image";
    scale.dispatchEvent(new Event("change"));
    const raw = el.querySelector("input[type=checkbox]");
    raw.checked = true;
    raw.dispatchEvent(new Event("change"));
    const image = el.querySelector('.nw-number[aria-label="chosen image index"]');
    image.value = "42";
    image.dispatchEvent(new Event("change"));
    await settled();
    expect(model.saved.slice(1)).toEqual([{ colormap: "viridis" }, { scale: "image" }, { show_raw: true }, { image: 42 }]);
    expect(el.querySelector(".nw-tiles").classList.contains("nw-show-raw")).toBe(true);
    await model.pythonSet({ shown: { unit: 3, scale: "image" } }); // the kernel re-rendered with the new scale
    expect(el.querySelector(".nw-colorbar-row").textContent).toContain("max of each image");
  });

  it("redraws once per kernel update, and frees each image URL once its image has loaded", async () => {
    const { model, el, cleanup } = setup();
    const first = [...el.querySelectorAll("img")];
    expect(globalThis.liveBlobUrls.size).toBe(7); // the colour bar and 2 tiles of 3 images
    await model.pythonSet({ tiles: [tile(1, true)], vrange: [0, 2], shown: { unit: 1, scale: "layer" } });
    // one redraw (4 new URLs, not 3 x 4), and the replaced images keep theirs until they loaded: revoking a
    // URL the browser still fetches fails the fetch (ERR_FILE_NOT_FOUND)
    expect(globalThis.liveBlobUrls.size).toBe(11);
    loaded(first); // the old tiles and the colour bar (whose new picture is loaded too)
    expect(globalThis.liveBlobUrls.size).toBe(3);
    const second = [...el.querySelectorAll("img")];
    cleanup();
    loaded(second);
    expect(globalThis.liveBlobUrls.size).toBe(0);
    expect(model.listenerCount()).toBe(0);
  });

  it("picks a unit with the number field: Enter or a change applies it, previous and next step", async () => {
    const { model, el, cleanup } = setup();
    document.body.append(el);
    const field = el.querySelector(".nw-unit");
    const [previous, next] = [el.querySelector(".nw-unit-previous"), el.querySelector(".nw-unit-next")];
    expect(field.value).toBe("3");
    expect(field.max).toBe("31");
    expect(el.querySelector(".nw-unit-range").textContent).toBe("0–31");
    field.focus();
    field.value = "17";
    const enter = new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true });
    let heard = 0;
    const host = (/** @type {Event} */ _event) => (heard += 1); // the notebook around the widget
    el.addEventListener("keydown", host);
    field.dispatchEvent(enter);
    expect(enter.defaultPrevented).toBe(true);
    expect(heard).toBe(0); // Enter and digits are the field's, not the notebook's shortcuts
    expect(model.saved).toEqual([{ unit: 17 }]);
    await settled();
    expect(el.querySelector(".nw-title").textContent).toBe(`unit 17 · layer ${EVIL} · top 2 images`);
    field.value = "017";
    field.dispatchEvent(new Event("change")); // left the field, or its spin buttons
    expect(field.value).toBe("17"); // the same unit: nothing sent again
    expect(model.saved).toEqual([{ unit: 17 }]);
    next.click();
    await settled();
    previous.click();
    previous.click();
    await settled();
    expect(model.saved.map((s) => s.unit)).toEqual([17, 18, 17, 16]);
    expect(field.value).toBe("16");
    expect(el.querySelector(".nw-tiles").dataset.unit).toBe("3"); // the tiles wait for the kernel's answer
    field.value = "2";
    field.dispatchEvent(new Event("input")); // typing, not applied yet: a kernel update keeps the text
    await model.pythonSet({ k: 3 });
    expect(field.value).toBe("2");
    field.blur(); // gone elsewhere: the kernel's unit shows
    await model.pythonSet({ unit: 0 });
    expect(previous.disabled).toBe(true);
    expect(field.value).toBe("0");
    await model.pythonSet({ unit: 31 });
    expect(next.disabled).toBe(true);
    expect(previous.disabled).toBe(false);
    next.click(); // disabled: nothing
    expect(model.saved.length).toBe(4);
    cleanup();
    el.remove();
  });

  it("refuses typed text that is no unit of the layer, visibly, and sends nothing", async () => {
    const { model, el, cleanup } = setup();
    document.body.append(el); // in the page: the field can have the focus
    const field = el.querySelector(".nw-unit");
    const note = el.querySelector(".nw-unit-note");
    expect(note.hidden).toBe(true);
    expectRefused(field, note, [
      ["32", "unit must be a whole number in 0..31, got 32"],
      ["-1", "unit must be a whole number in 0..31, got -1"],
      ["2.5", "unit must be a whole number in 0..31, got 2.5"],
      ["", "unit must be a whole number in 0..31"],
    ]);
    expect(model.saved).toEqual([]);
    expect(model.sent).toEqual([]);
    expect(field.getAttribute("aria-describedby")).toBe(note.id); // the reason is read with the field
    expect(note.previousElementSibling.classList.contains("nw-controls")).toBe(true); // a line of its own
    await model.pythonSet({ colormap: "viridis" }); // a redraw while typing keeps the text and the refusal
    expect(field.value).toBe("");
    expect(note.hidden).toBe(false);
    field.value = "4";
    field.dispatchEvent(new Event("input")); // typing again clears the refusal
    expect(note.hidden).toBe(true);
    expect(field.classList.contains("nw-invalid")).toBe(false);
    field.dispatchEvent(new Event("change"));
    expect(model.saved).toEqual([{ unit: 4 }]);
    field.value = "99";
    field.dispatchEvent(new Event("change"));
    expect(note.hidden).toBe(false);
    field.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true })); // gives up: the unit again
    expect(field.value).toBe("4");
    expect(note.hidden).toBe(true);
    field.blur();
    await model.pythonSet({ unit: 9 }); // the kernel's unit (a followed list's click) shows in the field
    expect(field.value).toBe("9");
    cleanup();
    el.remove();
  });

  it("switches to contribution mode: a class picker of text names, a diverging menu, signed sums", async () => {
    const { model, el } = setup();
    const mode = el.querySelector('select[aria-label="overlay mode"]');
    const target = el.querySelector('select[aria-label="class"]');
    const menu = el.querySelector('select[aria-label="colormap"]');
    expect(target.closest("label").hidden).toBe(true); // no class in activation mode
    mode.value = "contribution";
    mode.dispatchEvent(new Event("change"));
    await settled();
    expect(model.saved).toEqual([{ mode: "contribution" }]);
    expect(target.closest("label").hidden).toBe(false);
    expect([...target.options].map((o) => o.textContent)).toEqual(["predicted class", "zero", EVIL, "two"]);
    expect(el.querySelector("img[src='x']")).toBeNull(); // the names are text
    expect(target.value).toBe(""); // target null: each image's predicted class
    expect(el.querySelector(".nw-title").textContent).toBe(`unit 3 · layer ${EVIL} · top 2 images for the predicted class`);
    expect([...menu.options].map((o) => o.textContent)).toEqual(["RdBu_r", "coolwarm", "more… (4)"]);
    expect(menu.value).toBe("RdBu_r");
    target.value = "1";
    target.dispatchEvent(new Event("change"));
    menu.value = "coolwarm";
    menu.dispatchEvent(new Event("change"));
    await settled();
    expect(model.saved.slice(1)).toEqual([{ target: 1 }, { diverging_colormap: "coolwarm" }]);
    expect(model.get("colormap")).toBe("magma"); // the activation maps' colormap is kept for that mode
    expect(el.querySelector(".nw-title").textContent).toBe(`unit 3 · layer ${EVIL} · top 2 images for class ${EVIL}`);
    const signedTile = { ...tile(4), total: 0.5, vmin: -2, vmax: 2 };
    await model.pythonSet({ tiles: [signedTile, { ...tile(5), total: -0.25 }], shown: { unit: 3, mode: "contribution", scale: "image" } });
    const lines = [...el.querySelectorAll(".nw-tile figcaption")].map((c) => c.querySelectorAll(".nw-caption-line")[1].textContent);
    expect(lines).toEqual(["sum +0.5000 · -2.00…2.00", "sum -0.2500 · 0.0000…2.00"]);
    expect(el.querySelector(".nw-tiles").dataset.mode).toBe("contribution");
    expect(el.querySelector(".nw-colorbar-row").textContent).toBe("−max |value| of each image+max |value| of each image");
    target.value = "";
    target.dispatchEvent(new Event("change"));
    mode.value = "activation";
    mode.dispatchEvent(new Event("change"));
    await settled();
    expect(model.saved.slice(3)).toEqual([{ target: null }, { mode: "activation" }]);
    expect(target.closest("label").hidden).toBe(true);
    expect(menu.value).toBe("magma");
    expect([...menu.options].map((o) => o.textContent)).toEqual(["magma", "viridis", "more… (2)"]);
  });

  it("asks for the unit's visualisation with a button, shows its progress and Cancel, then its picture as text and PNG", async () => {
    const { model, el, cleanup } = setup();
    const tileOf = () => el.querySelector(".nw-visual");
    expect(el.querySelectorAll(".nw-tile").length).toBe(2); // beside the top images, not one of them
    expect(tileOf().dataset.state).toBe("none");
    const ask = tileOf().querySelector(".nw-visual-ask");
    expect(ask.textContent).toBe("show what excites this unit");
    ask.click();
    expect(model.sent).toEqual([{ type: "visualize", unit: 3, layer: EVIL }]); // the unit and layer shown
    expect(ask.disabled).toBe(true); // one request per press, until the kernel answers
    await model.pythonSet({ visual: { unit: 3, layer: EVIL, state: "running" }, status: "running" });
    expect(tileOf().dataset.state).toBe("running");
    expect(tileOf().querySelector(".nw-visual-ask")).toBeNull();
    expect(tileOf().querySelector(".nw-visual-note").textContent).toBe("computing…");
    tileOf().querySelector(".nw-visual-cancel").click();
    expect(model.sent.at(-1)).toEqual({ type: "cancel" });
    expect(el.querySelector(".nw-status .nw-cancel")).not.toBeNull(); // the strip's Cancel, as other long work
    const done = { unit: 3, layer: EVIL, state: "done", image: PNG, activation: 12.5, best: 2.25, best_index: 41, steps: 128, seconds: 0.5 };
    await model.pythonSet({ visual: done, status: "idle" });
    const picture = tileOf().querySelector("img.nw-visual-image");
    expect(picture.getAttribute("src")).toMatch(/^blob:/);
    expect(picture.alt).toBe("feature visualisation of unit 3");
    const lines = [...tileOf().querySelectorAll(".nw-caption-line")].map((l) => l.textContent);
    expect(lines).toEqual(["what excites it", "mean 12.50 · best 2.25"]);
    expect(tileOf().querySelector("figcaption").title).toContain(`layer ${EVIL}`); // as text
    expect(tileOf().querySelector("figcaption").title).toContain("most exciting image (#41) gives 2.25");
    expect(el.querySelector("img[src='x']")).toBeNull();
    // another unit picked here: the old unit's picture is not shown as this one's, and the button is back
    await model.pythonSet({ unit: 4 });
    expect(tileOf().dataset.state).toBe("none");
    expect(tileOf().querySelector("img")).toBeNull();
    tileOf().querySelector(".nw-visual-ask").click();
    expect(model.sent.at(-1)).toEqual({ type: "visualize", unit: 4, layer: EVIL });
    await model.pythonSet({ visual: { unit: 4, layer: EVIL, state: "cancelled" } });
    expect(tileOf().querySelector(".nw-visual-note").textContent).toBe("cancelled");
    expect(tileOf().querySelector(".nw-visual-ask").disabled).toBe(false); // may be asked for again
    await model.pythonSet({ visual: { unit: 4, layer: EVIL, state: "error" } });
    expect(tileOf().querySelector(".nw-visual-note").textContent).toBe("failed: see the error above");
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });

  it("reads a unit only from a whole number in range", () => {
    expect(parseUnit(" 7 ", 8)).toEqual({ unit: 7 });
    expect(parseUnit("0", 8)).toEqual({ unit: 0 });
    expect(parseUnit("8", 8)).toEqual({ refused: "unit must be a whole number in 0..7, got 8" });
    expect(parseUnit("1e1", 64)).toEqual({ unit: 10 });
    expect(parseUnit("0x10", 64)).toEqual({ unit: 16 });
    expect(parseUnit("3", 8, true)).toEqual({ refused: "unit must be a whole number in 0..7" });
    expect(parseUnit("0", 0)).toEqual({ refused: "unit must be a whole number (the layer has no units), got 0" });
  });
});

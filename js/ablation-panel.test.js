import { describe, expect, it } from "vitest";
import widget, { SLIDER_INTERVAL } from "./ablation-panel.js";
import { PNG, encoded, loaded, mount } from "./testing/fake-model.js";
import { expectRefused } from "./testing/fields.js";

const EVIL = "<img src=x onerror=alert(1)>";

function setup() {
  return mount(widget, {
    k: 0, toggled: [], mode: "zero", selected_unit: 30, layer: EVIL, units: 40, order: encoded([...Array(40).keys()].reverse(), "int32"),
    method: "ablation", classes: [EVIL, "b"], before: { accuracy: 0.9, per_class: [1, 0.8] },
    after: { accuracy: 0.9, per_class: [1, 0.8], ablated: [], k: 0 }, changed: [], changed_count: 0,
  });
}

describe("AblationPanel view", () => {
  it("sends a dragged slider's value at once, then at most every interval, and its last value always", async () => {
    const { model, el } = setup();
    const slider = el.querySelector(".nw-k");
    for (const k of [1, 2, 3]) {
      slider.value = String(k);
      slider.dispatchEvent(new Event("input"));
    }
    expect(model.saved).toEqual([{ k: 1 }]); // 2 and 3 wait for the interval; only the latest is sent
    expect(el.querySelector(".nw-k-label").textContent).toBe("3 of 40"); // the label follows at once
    await new Promise((resolve) => setTimeout(resolve, SLIDER_INTERVAL + 20));
    expect(model.saved).toEqual([{ k: 1 }, { k: 3 }]);
    slider.value = "7";
    slider.dispatchEvent(new Event("input"));
    slider.value = "8";
    slider.dispatchEvent(new Event("input"));
    slider.dispatchEvent(new Event("change")); // released: the last value goes at once
    expect(model.saved).toEqual([{ k: 1 }, { k: 3 }, { k: 8 }]); // 7 was replaced within the interval
  });

  it("keeps each changed prediction's picture across updates, and redraws them only for a new list", async () => {
    const { model, el } = setup();
    const item = (index, after) => ({ index, label: "a", before: "a", after, fixed: false, image: PNG });
    await model.pythonSet({ changed: [item(4, "b"), item(9, "b")], changed_count: 2 });
    const [four] = el.querySelectorAll(".nw-change img");
    expect(globalThis.liveBlobUrls.size).toBe(2);
    await model.pythonSet({ status: "running" }); // only the status: nothing of the list is redrawn
    expect(el.querySelector(".nw-change img")).toBe(four);
    await model.pythonSet({ status: "idle", changed: [item(4, "a"), item(7, "b")], changed_count: 2 });
    const images = el.querySelectorAll(".nw-change img");
    expect(images[0]).toBe(four); // image 4's picture is reused: no new <img>, no new blob URL
    expect(globalThis.liveBlobUrls.size).toBe(3);
    expect(el.querySelector(".nw-change figcaption").textContent).toBe("#4 (a): a → a");
  });

  it("shows toggles for the top units and the selected one, checked when ablated", async () => {
    const { model, el } = setup();
    await model.pythonSet({ k: 2, toggled: [39, 5] });
    const checked = [...el.querySelectorAll(".nw-toggle input:checked")].map((i) => Number(i.dataset.unit));
    expect(checked).toEqual([38]); // 39 and 38 are the top 2; toggling 39 brings it back (5 is not shown)
    expect(el.querySelector(".nw-toggle.nw-selected").dataset.unit).toBe("30");
    el.querySelector('.nw-toggle input[data-unit="30"]').dispatchEvent(new Event("change", { bubbles: true }));
    expect(model.sent).toEqual([{ type: "toggle", unit: 30 }]);
  });

  it("shows accuracy, per-class bars and changed predictions as text and PNGs", async () => {
    const { model, el, cleanup } = setup();
    await model.pythonSet({
      after: { accuracy: 0.5, per_class: [0.25, null], ablated: [1, 2], k: 2 },
      changed: [{ index: 4, label: EVIL, before: EVIL, after: "b", fixed: false, image: PNG }],
      changed_count: 30,
    });
    expect(el.querySelector(".nw-accuracy").textContent).toBe("accuracy 90.0% → 50.0% (2 units zeroed)");
    expect(el.querySelector(".nw-after").dataset.k).toBe("2");
    expect(el.querySelector(".nw-class-name").textContent).toBe(EVIL);
    expect(el.querySelector(".nw-bar-after").style.width).toBe("25%");
    expect(el.querySelector(".nw-subtitle + .nw-changed, .nw-changed")).not.toBeNull();
    expect(el.textContent).toContain("30 predictions changed (first 1 shown)");
    expect(el.querySelector(".nw-change figcaption").textContent).toBe(`#4 (${EVIL}): ${EVIL} → b`);
    expect(el.querySelector("img[src='x']")).toBeNull();
    const shownFirst = [...el.querySelectorAll("img")];
    await model.pythonSet({ status: "running" });
    expect(el.querySelector(".nw-ablation").classList.contains("nw-stale")).toBe(true);
    const images = [...el.querySelectorAll("img")];
    cleanup();
    expect(model.listenerCount()).toBe(0);
    loaded([...shownFirst, ...images]); // a URL is freed once its image loaded, also after the view is gone
    expect(globalThis.liveBlobUrls.size).toBe(0);
  });

  it("of 1,000 classes lists the 10 that changed most, all on request, and the ones searched for", async () => {
    const classes = Array.from({ length: 1000 }, (_, i) => `class ${i}`);
    classes[207] = "golden retriever";
    classes[208] = EVIL;
    const before = classes.map(() => 0.5);
    const after = classes.map((_, i) => 0.5 - (i % 97) / 200);
    const { model, el } = mount(widget, {
      k: 3, toggled: [], mode: "zero", selected_unit: null, layer: "layer4", units: 512, order: encoded([...Array(512).keys()], "int32"),
      method: "ablation", classes, before: { accuracy: 0.5, per_class: before }, after: { accuracy: 0.3, per_class: after, ablated: [0, 1, 2], k: 3 },
      changed: [], changed_count: 0,
    });
    const rows = () => [...el.querySelectorAll(".nw-class-row")].map((r) => Number(r.dataset.class));
    const title = () => el.querySelector(".nw-classes-title").textContent;
    expect(rows()).toEqual([96, 193, 290, 387, 484, 581, 678, 775, 872, 969]);
    expect(el.querySelector(".nw-classes-title").textContent).toBe("the 10 of 1,000 classes whose accuracy changed most");
    const showAll = el.querySelector(".nw-show-all");
    expect(showAll.textContent).toBe("show all 1,000");
    showAll.click();
    expect(rows()).toHaveLength(1000);
    expect(showAll.getAttribute("aria-pressed")).toBe("true");
    showAll.click();
    expect(rows()).toHaveLength(10);
    const search = el.querySelector(".nw-class-filter");
    search.value = "retr";
    search.dispatchEvent(new Event("input"));
    expect(rows()).toEqual([207]);
    expect(el.querySelector(".nw-class-name").textContent).toBe("golden retriever");
    expect(el.querySelector(".nw-classes-title").textContent).toBe("1 of 1,000 classes match, most changed first");
    search.value = "<img";
    search.dispatchEvent(new Event("input"));
    expect(el.querySelector(".nw-class-name").textContent).toBe(EVIL);
    expect(el.querySelector("img[src='x']")).toBeNull();
    const escape = new KeyboardEvent("keydown", { key: "Escape", bubbles: true, cancelable: true });
    search.dispatchEvent(escape);
    expect(escape.defaultPrevented).toBe(true);
    expect(rows()).toHaveLength(10);
    await model.pythonSet({ after: { accuracy: 0.5, per_class: before, ablated: [], k: 0 } });
    expect(title()).toBe("no class's accuracy changed (10 of 1,000 classes shown)");
  });

  it("lists a few classes in their own order, and shows the kernel's warnings as text", async () => {
    const { model, el } = setup();
    expect(el.querySelector(".nw-classes-bar").hidden).toBe(true);
    expect([...el.querySelectorAll(".nw-class-name")].map((n) => n.textContent)).toEqual([EVIL, "b"]);
    expect(el.querySelector(".nw-warnings").hidden).toBe(true);
    await model.pythonSet({ before: { accuracy: 0.5, per_class: [0, 1], warnings: [`at or below chance ${EVIL}`] } });
    const warning = el.querySelector(".nw-warnings");
    expect(warning.hidden).toBe(false);
    expect(warning.textContent).toBe(`⚠ at or below chance ${EVIL}`);
    expect(el.querySelector("img[src='x']")).toBeNull();
  });

  it("toggles any unit by its number, and shows those without a toggle as chips that undo them", async () => {
    const { model, el, cleanup } = setup(); // 40 units ranked 39, 38, ...: the toggles are 39..24 and 30
    document.body.append(el);
    const field = el.querySelector(".nw-toggle-unit");
    const note = el.querySelector(".nw-toggle-note");
    const extra = el.querySelector(".nw-extra");
    expect(extra.hidden).toBe(true);
    field.focus();
    field.value = "3"; // rank 37: no toggle
    const enter = new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true });
    let heard = 0;
    el.addEventListener("keydown", () => (heard += 1)); // the notebook around the widget
    field.dispatchEvent(enter);
    expect(enter.defaultPrevented).toBe(true);
    expect(heard).toBe(0);
    expect(model.sent).toEqual([{ type: "toggle", unit: 3 }]); // the toggles' own message: the kernel checks it
    expect(field.value).toBe(""); // ready for the next one
    await model.pythonSet({ toggled: [3], after: { accuracy: 0.8, per_class: [1, 0.6], ablated: [3], k: 0, mode: "zero" } });
    expect(el.querySelector(".nw-accuracy").textContent).toBe("accuracy 90.0% → 80.0% (1 unit zeroed)");
    const chips = () => [...el.querySelectorAll(".nw-extra .nw-chip")].map((c) => c.textContent);
    expect(extra.hidden).toBe(false);
    expect(extra.textContent).toBe("also ablated:unit 3 ×");
    expect(el.querySelector(".nw-toggle input[data-unit='3']")).toBeNull();
    field.value = "0";
    el.querySelector(".nw-toggle-apply").click(); // the button does the same
    expect(model.sent.at(-1)).toEqual({ type: "toggle", unit: 0 });
    // with the top 20 ablated, toggling rank 20 (unit 20) keeps it; a toggled unit with a toggle is no chip
    await model.pythonSet({ k: 20, toggled: [0, 3, 20, 39] });
    expect(chips()).toEqual(["unit 0 ×", "unit 3 ×", "unit 20 kept ×"]);
    expect(el.querySelector(".nw-extra .nw-kept").dataset.unit).toBe("20");
    expect(el.querySelector(".nw-toggle input[data-unit='39']").checked).toBe(false);
    el.querySelector(".nw-extra .nw-chip[data-unit='3']").click();
    expect(model.sent.at(-1)).toEqual({ type: "toggle", unit: 3 });
    await model.pythonSet({ selected_unit: 3 }); // selected: it has a toggle now
    expect(chips()).toEqual(["unit 0 ×", "unit 20 kept ×"]);
    expect(el.querySelector(".nw-toggle input[data-unit='3']").checked).toBe(true);
    expect(note.hidden).toBe(true);
    cleanup();
    el.remove();
  });

  it("refuses a typed unit outside the layer, visibly, and sends nothing", async () => {
    const { model, el } = setup();
    const field = el.querySelector(".nw-toggle-unit");
    const note = el.querySelector(".nw-toggle-note");
    expectRefused(field, note, [
      ["40", "unit must be a whole number in 0..39, got 40"],
      ["-2", "unit must be a whole number in 0..39, got -2"],
      ["1.5", "unit must be a whole number in 0..39, got 1.5"],
      ["", "unit must be a whole number in 0..39"],
    ]);
    expect(field.getAttribute("aria-describedby")).toBe(note.id); // the reason is read with the field
    el.querySelector(".nw-toggle-apply").click();
    expect(model.sent).toEqual([]);
    field.value = "39";
    field.dispatchEvent(new Event("input")); // typing again clears the refusal
    expect(note.hidden).toBe(true);
    expect(field.classList.contains("nw-invalid")).toBe(false);
    field.dispatchEvent(new Event("change")); // leaving the field toggles nothing: only Enter or the button do
    expect(model.sent).toEqual([]);
    await model.pythonSet({ units: 64 }); // another layer: the range follows
    field.value = "63";
    el.querySelector(".nw-toggle-apply").click();
    expect(model.sent).toEqual([{ type: "toggle", unit: 63 }]);
  });
});

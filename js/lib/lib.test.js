import { describe, expect, it } from "vitest";
import { FakeModel, PNG, loaded, settled } from "../testing/fake-model.js";
import { coalesced, h, listen, on, redrawOn, setOptions } from "./dom.js";
import { percent, score, seconds } from "./format.js";
import { bytesOf, showPng } from "./images.js";
import { statusStrip } from "./status.js";
import { linear, svg } from "./svg.js";

const EVIL = "<img src=x onerror=alert(1)>";

describe("dom", () => {
  it("inserts text as text, never as HTML", () => {
    const el = h("div", { text: EVIL, attrs: { title: EVIL } }, [EVIL]);
    expect(el.querySelector("img")).toBeNull();
    expect(el.textContent).toBe(EVIL + EVIL);
    const select = h("select");
    setOptions(select, [["a", EVIL]], "a");
    expect(select.querySelector("img")).toBeNull();
    expect(select.options[0].textContent).toBe(EVIL);
  });

  it("omits false attributes and removes listeners", () => {
    expect(h("input", { attrs: { checked: false } }).hasAttribute("checked")).toBe(false);
    const model = new FakeModel({});
    const off = listen(model, ["change:a", "change:b"], () => {});
    expect(model.listenerCount()).toBe(2);
    off();
    expect(model.listenerCount()).toBe(0);
  });

  it("removes a DOM listener with the function it returns", () => {
    const button = h("button");
    let clicks = 0;
    const off = on(button, "click", () => (clicks += 1));
    button.click();
    off();
    button.click();
    expect(clicks).toBe(1);
  });
});

describe("images", () => {
  it("shows buffers through blob URLs, freed once the image loaded or failed", () => {
    expect(bytesOf(PNG).byteLength).toBe(8);
    const img = showPng(document.createElement("img"), PNG);
    expect(img.src).toMatch(/^blob:/);
    showPng(img, PNG); // replaced before the first loaded: both are freed at the next load
    expect(globalThis.liveBlobUrls.size).toBe(2);
    loaded([img]);
    expect(globalThis.liveBlobUrls.size).toBe(0);
    const broken = showPng(document.createElement("img"), PNG);
    broken.dispatchEvent(new Event("error"));
    expect(globalThis.liveBlobUrls.size).toBe(0);
    expect(showPng(img, new DataView(new ArrayBuffer(0))).hasAttribute("src")).toBe(false);
  });

  it("redraws once per burst of model changes, and never after its cleanup", async () => {
    const model = new FakeModel({ a: 1, b: 2 });
    let draws = 0;
    const cleanup = redrawOn(model, ["change:a", "change:b"], () => draws++);
    await model.pythonSet({ a: 3, b: 4 });
    expect(draws).toBe(1);
    model.pythonSet({ a: 5 });
    cleanup(); // before the pending redraw ran
    await settled();
    expect(draws).toBe(1);
    expect(model.listenerCount()).toBe(0);
  });

  it("runs a coalesced function once per burst of calls, and never after cancel", async () => {
    let runs = 0;
    const draw = coalesced(() => runs++);
    draw();
    draw();
    draw();
    expect(runs).toBe(0);
    await settled();
    expect(runs).toBe(1);
    draw();
    draw.cancel();
    await settled();
    expect(runs).toBe(1);
  });
});

describe("format", () => {
  it("formats scores, percentages and times", () => {
    expect(score(0.5)).toBe("0.5000");
    expect(score(12.345)).toBe("12.35");
    expect(score(null)).toBe("–");
    expect(percent(0.987)).toBe("98.7%");
    expect(seconds(null)).toBe("estimating…");
    expect(seconds(75)).toBe("1 min 15 s");
  });
});

describe("status strip", () => {
  it("shows progress with an ETA, cancels, and shows kernel errors as text", () => {
    const model = new FakeModel({ status: "idle", progress: {}, error: "" });
    const strip = statusStrip(model, { cancellable: true });
    const progress = strip.el.querySelector(".nw-progress");
    expect(progress.hidden).toBe(true);
    model.pythonSet({ status: "running", progress: { description: "ranking", done: 1, total: 4, eta: 3 } });
    expect(progress.hidden).toBe(false);
    expect(strip.el.textContent).toContain("ranking: 25%, 3 s left");
    strip.el.querySelector(".nw-cancel").click();
    expect(model.sent).toEqual([{ type: "cancel" }]);
    model.pythonSend({ type: "error", message: EVIL });
    expect(strip.el.querySelector(".nw-error").hidden).toBe(false);
    expect(strip.el.querySelector(".nw-error-text").textContent).toBe(EVIL);
    expect(strip.el.querySelector("img")).toBeNull();
    strip.el.querySelector(".nw-dismiss").click();
    expect(model.sent.at(-1)).toEqual({ type: "dismiss" });
    strip.cleanup();
    expect(model.listenerCount()).toBe(0);
  });
});

describe("svg", () => {
  it("builds SVG elements with text as text, and linear scales", () => {
    const el = svg("text", { x: 1 }, [], EVIL);
    expect(el.namespaceURI).toBe("http://www.w3.org/2000/svg");
    expect(el.textContent).toBe(EVIL);
    expect(el.querySelector("img")).toBeNull();
    expect(linear(0, 10, 100, 200)(5)).toBe(150);
    expect(linear(3, 3, 0, 10)(3)).toBe(5);
  });
});

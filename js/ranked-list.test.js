import { describe, expect, it } from "vitest";
import widget, {
  MATCHES_SHOWN, ROW_HEIGHT, SEARCH_FROM, badgeText, classOptions, rankAfterKey, sampleStatus, titleOf,
} from "./ranked-list.js";
import { PNG, encoded, loaded, mount, settled } from "./testing/fake-model.js";

const EVIL = "<img src=x onerror=alert(1)>";

function setup(units = 5, extra = {}) {
  const scores = Array.from({ length: units }, (_, i) => (i * 7) % units);
  const order = [...scores.keys()].sort((a, b) => scores[b] - scores[a] || a - b);
  const mounted = mount(widget, {
    method: "ablation",
    target: null,
    layer: EVIL,
    layers: [EVIL, "fc"],
    selected_unit: null,
    methods: [
      { name: "ablation", description: "accuracy drop", takes_target: true, needs_image: false },
      { name: "weight_l1", description: "filter norm", takes_target: false, needs_image: false },
      { name: "resampling_precision", description: "noisy copies", takes_target: true, needs_image: true },
    ],
    classes: [EVIL, "b"],
    interactive: true,
    image: 0,
    scores: encoded(scores, "float64"),
    order: encoded(order, "int32"),
    info: { method: "ablation", layer: EVIL, target: null, target_name: null, units, provisional: false },
    ...extra,
  });
  return { ...mounted, order };
}

describe("RankedList view", () => {
  it("shows units in ranked order with the method, layer and class as text", async () => {
    const { el, order } = setup();
    const units = [...el.querySelectorAll(".nw-row")].map((r) => Number(r.dataset.unit));
    expect(units).toEqual(order);
    expect(el.querySelector(".nw-title").textContent).toBe(`ablation · layer ${EVIL} · all classes · 5 units`);
    expect(el.querySelector("img[src='x']")).toBeNull();
    expect([...el.querySelectorAll("option")].map((o) => o.textContent)).toContain(EVIL);
  });

  it("shows a label column (text, never markup) with its tooltip, only for labels of the ranking's units", async () => {
    const { model, el, order } = setup();
    expect(el.querySelector(".nw-label")).toBeNull(); // no labels: no column
    const texts = ["red 0.22", EVIL, "", "circle 0.10", "square 0.05"];
    const titles = texts.map((text, unit) => `unit ${unit}: ${text}`);
    await model.pythonSet({ label_texts: texts, label_titles: titles });
    const viewport = el.querySelector(".nw-list-viewport");
    expect(viewport.classList.contains("nw-labelled")).toBe(true);
    const cells = [...el.querySelectorAll(".nw-row")].map((row) => row.querySelector(".nw-label"));
    expect(cells.map((cell) => cell.textContent)).toEqual(order.map((unit) => texts[unit]));
    expect(cells.map((cell) => cell.title)).toEqual(order.map((unit) => titles[unit]));
    expect(el.querySelector("img[src='x']")).toBeNull(); // the markup is shown as text
    expect(cells[order.indexOf(1)].children.length).toBe(0);
    await model.pythonSet({ label_texts: ["a", "b"], label_titles: ["a", "b"] }); // another layer's: not shown
    expect(el.querySelector(".nw-label")).toBeNull();
    expect(viewport.classList.contains("nw-labelled")).toBe(false);
  });

  it("selects on click and with the keyboard", async () => {
    const { model, el, order } = setup();
    el.querySelector(`.nw-row[data-unit="${order[1]}"]`).click();
    expect(model.get("selected_unit")).toBe(order[1]);
    expect(model.saved.at(-1)).toEqual({ selected_unit: order[1] });
    const viewport = el.querySelector(".nw-list-viewport");
    viewport.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown" }));
    expect(model.get("selected_unit")).toBe(order[2]);
    viewport.dispatchEvent(new KeyboardEvent("keydown", { key: "Home" }));
    expect(model.get("selected_unit")).toBe(order[0]);
    viewport.dispatchEvent(new KeyboardEvent("keydown", { key: "End" }));
    expect(model.get("selected_unit")).toBe(order[4]);
    expect(el.querySelector(".nw-selected").getAttribute("aria-selected")).toBe("true");
  });

  it("renders only the visible rows of 2,048 units, from rank 1 for a new ranking", async () => {
    const { model, el } = setup(2048);
    const rows = el.querySelectorAll(".nw-row");
    expect(rows.length).toBeLessThan(40);
    const viewport = el.querySelector(".nw-list-viewport");
    viewport.scrollTop = 1000 * ROW_HEIGHT;
    viewport.dispatchEvent(new Event("scroll"));
    const ranks = [...el.querySelectorAll(".nw-row")].map((r) => Number(r.dataset.rank));
    expect(ranks).toContain(1000);
    expect(el.querySelector(".nw-list-spacer").style.height).toBe(`${2048 * ROW_HEIGHT}px`);
    await model.pythonSet({ scores: encoded(Array.from({ length: 2048 }, (_, i) => i), "float64"), order: encoded([...Array(2048).keys()].reverse(), "int32") });
    expect(viewport.scrollTop).toBe(0); // a new ranking starts at rank 1
    viewport.scrollTop = 300 * ROW_HEIGHT;
    await model.pythonSet({ info: { ...model.get("info"), seconds: 2 } }); // the same order: the place is kept
    expect(viewport.scrollTop).toBe(300 * ROW_HEIGHT);
  });

  it("re-ranks through the pickers and asks for thumbnails on hover", async () => {
    const { model, el, order } = setup();
    const [method, target, layer] = el.querySelectorAll("select");
    expect(target.disabled).toBe(false);
    method.value = "weight_l1";
    method.dispatchEvent(new Event("change"));
    expect(model.get("method")).toBe("weight_l1");
    await settled();
    expect(target.disabled).toBe(true); // weight_l1 has no class-specific variant
    target.value = "1";
    target.dispatchEvent(new Event("change"));
    expect(model.get("target")).toBe(1);
    layer.value = "fc";
    layer.dispatchEvent(new Event("change"));
    expect(model.get("layer")).toBe("fc");
    el.querySelector(".nw-refresh").click();
    expect(model.sent).toContainEqual({ type: "refresh" });

    await model.pythonSet({ layer: EVIL });
    const row = el.querySelector(`.nw-row[data-unit="${order[0]}"]`);
    row.dispatchEvent(new MouseEvent("mousemove", { bubbles: true }));
    expect(model.sent).toContainEqual({ type: "thumbnail", unit: order[0] });
    expect(el.querySelector(".nw-tip").hidden).toBe(false);
    expect(el.querySelector(".nw-tip-text").textContent).toContain(`unit ${order[0]} · rank 1`);
    model.pythonSend({ type: "thumbnail", unit: order[0], layer: EVIL }, [PNG]);
    expect(el.querySelector(".nw-tip-image").src).toMatch(/^blob:/);
  });

  it("shows a fast estimate as provisional, and cleans up every listener and URL", async () => {
    const { model, el, cleanup } = setup(5, {
      info: { method: "taylor", layer: "l", units: 5, provisional: true, estimate_for: "ablation" },
    });
    expect(el.querySelector(".nw-badge").hidden).toBe(false);
    expect(el.querySelector(".nw-badge").textContent).toContain("ablation on the way");
    el.querySelector('.nw-row[data-unit="0"]').dispatchEvent(new MouseEvent("mousemove", { bubbles: true }));
    model.pythonSend({ type: "thumbnail", unit: 0, layer: EVIL }, [PNG]);
    expect(globalThis.liveBlobUrls.size).toBe(1);
    cleanup();
    expect(model.listenerCount()).toBe(0);
    loaded(el.querySelectorAll("img"));
    expect(globalThis.liveBlobUrls.size).toBe(0);
  });

  it("marks a method that ranks for one class, and asks for a class when the kernel says so", async () => {
    const { model, el } = setup(5, {
      methods: [
        { name: "ablation", description: "accuracy drop", takes_target: true, needs_image: false },
        { name: "pcace", description: "correlation", takes_target: true, needs_target: true, needs_image: false },
      ],
    });
    document.body.append(el); // focus needs a document
    const method = el.querySelector("select");
    expect([...method.options].map((o) => o.textContent)).toEqual(["ablation", "pcace (one class)"]);
    method.focus();
    method.value = "pcace";
    method.dispatchEvent(new Event("change"));
    await model.pythonSet({ prompt: "pcace ranks the units for one class: pick a class" });
    const prompt = el.querySelector(".nw-prompt");
    expect(prompt.hidden).toBe(false);
    expect(prompt.textContent).toBe("pcace ranks the units for one class: pick a class");
    expect(document.activeElement).toBe(el.querySelectorAll("select")[1]); // the class picker
    await model.pythonSet({ prompt: "" });
    expect(prompt.hidden).toBe(true);
    el.remove();
  });

  it("claims its own keys before the host's shortcuts (capture phase), and no others", async () => {
    const { el, cleanup } = setup();
    document.body.append(el);
    const viewport = el.querySelector(".nw-list-viewport");
    let seenByHost = null; // a host shortcut handler in the capture phase on document, as Notebook 7's lumino
    const host = (event) => (seenByHost = event.defaultPrevented);
    document.addEventListener("keydown", host, true);
    const press = (key) => {
      const event = new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true, composed: true });
      viewport.dispatchEvent(event);
      return event;
    };
    expect(press("ArrowDown").defaultPrevented).toBe(true);
    expect(seenByHost).toBe(true); // lumino skips a keydown whose default is prevented
    expect(press("b").defaultPrevented).toBe(false); // the host's other shortcuts keep working
    expect(seenByHost).toBe(false);
    cleanup();
    expect(press("ArrowDown").defaultPrevented).toBe(false); // the window listener is gone with the view
    document.removeEventListener("keydown", host, true);
    el.remove();
  });

  it("disables the pickers for a fixed ranking", async () => {
    const { el } = setup(5, { interactive: false });
    for (const select of el.querySelectorAll("select")) expect(select.disabled).toBe(true);
  });

  it("shows the image picker only for a method that explains one image, as the kernel declares it", async () => {
    const { model, el } = setup();
    const field = el.querySelector(".nw-image").closest("label");
    expect(field.hidden).toBe(true);
    await model.pythonSet({ method: "resampling_precision" });
    expect(field.hidden).toBe(false);
    expect(el.querySelector("select").title).toBe("noisy copies");
    const image = el.querySelector(".nw-image");
    image.value = "12";
    image.dispatchEvent(new Event("change"));
    expect(model.saved.at(-1)).toEqual({ image: 12 });
    image.value = "1.5"; // not an index: not sent
    image.dispatchEvent(new Event("change"));
    expect(model.saved.at(-1)).toEqual({ image: 12 });
  });

  it("decodes float64 scores and int32 order with their dtype and shape", async () => {
    const scores = [0.1, 0.30000000000000004, 0.2];
    const { el } = setup(3, { scores: encoded(scores, "float64"), order: encoded([1, 2, 0], "int32") });
    expect([...el.querySelectorAll(".nw-row")].map((r) => Number(r.dataset.unit))).toEqual([1, 2, 0]);
    expect(el.querySelector(".nw-row .nw-score").textContent).toBe("0.3000");
  });

  it("moves the selection by key and words the heading", async () => {
    expect(rankAfterKey("ArrowDown", -1, 5)).toBe(0);
    expect(rankAfterKey("PageDown", 0, 5)).toBe(4);
    expect(rankAfterKey("ArrowUp", 0, 5)).toBe(0);
    expect(rankAfterKey("x", 2, 5)).toBeNull();
    expect(titleOf({ method: "taylor", layer: "fc", target_name: "cat", units: 3 })).toBe("taylor · layer fc · class cat · 3 units");
  });

  it("picks one of 1,000 classes by typing: 'ret' lists 'golden retriever', arrows and Enter pick it", async () => {
    const classes = Array.from({ length: 1000 }, (_, i) => `class ${i}`);
    classes[207] = "golden retriever";
    classes[208] = "Labrador retriever";
    classes[5] = EVIL;
    const { model, el, cleanup } = setup(5, { classes });
    document.body.append(el); // focus needs a document
    expect(el.querySelector('select[aria-label="class"]').closest("label").hidden).toBe(true);
    const search = el.querySelector(".nw-class-search");
    expect(search.closest(".nw-combo").hidden).toBe(false);
    expect(search.getAttribute("role")).toBe("combobox");
    search.focus();
    const list = el.querySelector(".nw-matches");
    expect(list.hidden).toBe(false);
    expect(list.querySelectorAll(".nw-match")).toHaveLength(MATCHES_SHOWN + 1); // "all classes" first
    expect(list.textContent).toContain("950 more: type more to narrow");
    search.value = "ret";
    search.dispatchEvent(new Event("input"));
    expect([...list.querySelectorAll(".nw-match")].map((o) => o.textContent)).toEqual(["golden retriever", "Labrador retriever"]);
    expect(search.getAttribute("aria-activedescendant")).toBe(list.querySelector(".nw-match").id);
    const down = new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true, cancelable: true });
    const outside = [];
    el.addEventListener("keydown", (e) => outside.push(e.key));
    search.dispatchEvent(down);
    expect(down.defaultPrevented).toBe(true);
    expect(list.querySelector(".nw-active").textContent).toBe("Labrador retriever");
    search.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowUp", bubbles: true }));
    search.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    search.dispatchEvent(new KeyboardEvent("keydown", { key: "a", bubbles: true })); // typing: not a notebook shortcut
    expect(outside).toEqual([]); // the keys it uses stop at the box
    expect(model.get("target")).toBe(207);
    expect(model.saved.at(-1)).toEqual({ target: 207 });
    expect(list.hidden).toBe(true);
    expect(search.value).toBe("golden retriever");

    // a click on a match picks it; markup in a name is text
    search.value = "<img";
    search.dispatchEvent(new Event("input"));
    const match = list.querySelector(".nw-match");
    expect(match.textContent).toBe(EVIL);
    match.dispatchEvent(new MouseEvent("mousedown", { bubbles: true, cancelable: true }));
    expect(model.get("target")).toBe(5);
    expect(el.querySelector("img[src='x']")).toBeNull();

    // Escape gives up and shows the chosen class; no match says so; the kernel's choice shows when not typing
    search.value = "zzz";
    search.dispatchEvent(new Event("input"));
    expect(list.textContent).toBe("no class matches “zzz”");
    search.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    expect(search.value).toBe(EVIL);
    expect(list.hidden).toBe(true);
    // the view's re-creation detaches the box and focuses it again at once: the query and the list stay as
    // they were (closed here, after Escape; open with the query typed)
    search.blur();
    search.focus();
    expect(list.hidden).toBe(true);
    search.value = "golden";
    search.dispatchEvent(new Event("input"));
    search.blur();
    search.focus();
    expect(list.hidden).toBe(false);
    expect(search.value).toBe("golden");
    expect(list.querySelector(".nw-match").textContent).toBe("golden retriever");
    search.blur();
    await new Promise((resolve) => setTimeout(resolve, 200)); // the focus really went elsewhere
    expect(list.hidden).toBe(true);
    expect(search.value).toBe(EVIL);
    await model.pythonSet({ target: null });
    expect(search.value).toBe("");
    await model.pythonSet({ method: "weight_l1" });
    expect(search.disabled).toBe(true);
    cleanup();
    el.remove();
  });

  it("keeps a <select> for a few classes", async () => {
    const { el } = setup(5, { classes: Array.from({ length: SEARCH_FROM }, (_, i) => `c${i}`) });
    expect(el.querySelector('select[aria-label="class"]').closest("label").hidden).toBe(false);
    expect(el.querySelector(".nw-combo").hidden).toBe(true);
    expect(classOptions(["a", "ab"], "").options.map((o) => o.value)).toEqual([null, 0, 1]);
    expect(classOptions(["a", "ab", "b"], "a", 1)).toEqual({ options: [{ value: 0, name: "a" }], more: 1 });
  });

  it("says why a ranking may mislead, as text", async () => {
    const { model, el } = setup();
    expect(el.querySelector(".nw-warnings").hidden).toBe(true);
    await model.pythonSet({ info: { method: "ablation", layer: "l", units: 5, warnings: ["base accuracy 0.0%: labels may not be the model's class indices", EVIL] } });
    const warnings = el.querySelector(".nw-warnings");
    expect(warnings.hidden).toBe(false);
    expect([...warnings.children].map((w) => w.textContent)).toEqual([
      "⚠ base accuracy 0.0%: labels may not be the model's class indices",
      `⚠ ${EVIL}`,
    ]);
    expect(el.querySelector("img[src='x']")).toBeNull();
  });

  it("draws an estimate's intervals as whiskers on the bars' scale, and says what it is based on", async () => {
    // units 0..4 score 0, 2, 4, 1, 3 (see setup); unit 2's interval reaches 8, the scale's right end
    const intervals = [-1, 1, 1, 3, 2, 8, 0.5, 1.5, 2, 4];
    const info = {
      method: "ablation", layer: "l", target: null, units: 5, provisional: true, estimate_for: "ablation",
      exact: false, images_used: [1280, 1280], population: 8985, confidence: 0.95, simultaneous: false, top_set: null,
    };
    const { model, el } = setup(5, { info, intervals: encoded(intervals, "float64", [5, 2]) });
    const rowOf = (unit) => el.querySelector(`.nw-row[data-unit="${unit}"]`);
    const top = rowOf(2).querySelector(".nw-whisker");
    expect([top.style.left, top.style.width]).toEqual(["25%", "75%"]); // 2..8 on a 0..8 scale
    expect(rowOf(2).querySelector(".nw-bar").style.width).toBe("50%"); // the bar is on the same scale
    const clipped = rowOf(0).querySelector(".nw-whisker"); // -1 is left of the track: drawn open
    expect(clipped.classList.contains("nw-open-lo")).toBe(true);
    expect([clipped.style.left, clipped.style.width]).toEqual(["0%", "12.5%"]);
    expect(el.querySelector(".nw-sample").textContent).toBe("estimate from 1,280 of 8,985 images, 95% intervals");
    expect(el.querySelector(".nw-badge").textContent).toBe("refining: the exact ranking is on the way");
    expect(el.querySelector(".nw-settled")).toBeNull(); // no top set: no settled marks
    rowOf(2).dispatchEvent(new MouseEvent("mousemove", { bubbles: true }));
    expect(el.querySelector(".nw-tip-text").textContent).toBe("unit 2 · rank 1 · score 4.00 · interval 2.00 to 8.00");
    // a refined estimate keeps the user's place; the exact ranking drops the whiskers and says so
    const viewport = el.querySelector(".nw-list-viewport");
    viewport.scrollTop = 2 * ROW_HEIGHT;
    await model.pythonSet({ order: encoded([2, 4, 1, 0, 3], "int32") });
    expect(viewport.scrollTop).toBe(2 * ROW_HEIGHT);
    await model.pythonSet({ intervals: null, info: { ...info, provisional: false, estimate_for: null, exact: true, images_used: [8985, 8985] } });
    expect(el.querySelector(".nw-whisker")).toBeNull();
    expect(el.querySelector(".nw-sample").textContent).toBe("exact (all 8,985 images)");
    expect(el.querySelector(".nw-badge").hidden).toBe(true);
  });

  it("marks settled places with a tooltip, as text; 2,048 units with whiskers stay virtualised", async () => {
    const units = 2048;
    const intervals = Array.from({ length: 2 * units }, (_, i) => (i % 2 ? 1 : -1) * ((i >> 1) % 7));
    const settled = Array.from({ length: units }, (_, unit) => Number(unit % 3 === 0));
    const info = {
      method: "ablation", layer: EVIL, target: null, units, provisional: false, exact: false,
      images_used: [64, 8985], population: 8985, confidence: 0.95, simultaneous: true, top_set: [0, 3, 6],
    };
    const { el, order } = setup(units, { info, intervals: encoded(intervals, "float64", [units, 2]), settled: encoded(settled, "uint8") });
    expect(el.querySelectorAll(".nw-row").length).toBeLessThan(40);
    expect(el.querySelectorAll(".nw-whisker").length).toBe(el.querySelectorAll(".nw-row").length);
    expect(el.querySelector(".nw-list-viewport").classList.contains("nw-marked")).toBe(true);
    const first = el.querySelector(`.nw-row[data-unit="${order[0]}"]`);
    const mark = first.querySelector(".nw-settled");
    expect(mark.classList.contains("nw-is-settled")).toBe(order[0] % 3 === 0);
    const marked = el.querySelector(".nw-is-settled");
    const unit = Number(marked.closest(".nw-row").dataset.unit);
    expect(marked.title).toBe(`place settled: ${[0, 3, 6].includes(unit) ? "in" : "out of"} the top 3`);
    expect(el.querySelector(".nw-sample").textContent).toBe("estimate from 64 to 8,985 of 8,985 images per unit, 95% intervals for all units at once");
    expect(el.querySelector("img[src='x']")).toBeNull();
  });

  it("words the status and the badge of each kind of ranking", () => {
    expect(sampleStatus({ method: "taylor" })).toBe(""); // a method that does not say: nothing
    expect(sampleStatus({ exact: true, population: 360 })).toBe("exact (all 360 images)");
    expect(badgeText({ provisional: false })).toBe("");
    expect(badgeText({ provisional: true, method: "taylor", estimate_for: "car" })).toBe("fast estimate (taylor); car on the way");
  });
});

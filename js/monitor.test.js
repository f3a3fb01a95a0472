import { describe, expect, it } from "vitest";
import widget, { COLOURS, spread } from "./monitor.js";
import { mount } from "./testing/fake-model.js";

const EVIL = "<img src=x onerror=alert(1)>";
const tick = () => new Promise((resolve) => queueMicrotask(resolve));

function setup(extra = {}) {
  const mounted = mount(widget, {
    top: 3,
    steps: [],
    lines: [],
    stability: [],
    died: [],
    emerged: [],
    info: { method: "taylor", layer: EVIL, units: 8, every: 10, step: null, snapshots: 0, seconds: null, monitor_seconds: 0 },
    ...extra,
  });
  return { ...mounted, chart: mounted.el.querySelector(".nw-monitor-chart") };
}

/** What Python sends for one more snapshot: all traits in one update. */
function snapshot(model, steps, lines, stability, died = [], emerged = []) {
  model.pythonSet({
    steps,
    lines,
    stability,
    died,
    emerged,
    info: { ...model.get("info"), step: steps.at(-1), snapshots: steps.length, seconds: 0.05, monitor_seconds: 0.05 * steps.length },
  });
}

describe("MonitorView view", () => {
  it("waits for the first snapshot, with names as text", () => {
    const { el, chart } = setup();
    expect(chart.dataset.updates).toBe("1");
    expect(chart.dataset.snapshots).toBe("0");
    expect(chart.textContent).toContain("waiting for the first snapshot");
    expect(el.querySelector(".nw-title").textContent).toBe(`taylor · layer ${EVIL} · 8 units · top 3`);
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector(".nw-stability-text").textContent).toBe("rank stability: needs two snapshots");
  });

  it("draws one line per unit and counts one draw per snapshot", async () => {
    const { el, model, chart } = setup();
    snapshot(model, [10], [{ unit: 4, ranks: [0] }, { unit: 1, ranks: [1] }], []);
    await tick();
    expect(chart.dataset.updates).toBe("2"); // six traits changed, one draw
    snapshot(model, [10, 20], [{ unit: 1, ranks: [1, 0] }, { unit: 4, ranks: [0, 1] }, { unit: 6, ranks: [7, 2] }], [0.5], [3], [6]);
    await tick();
    expect(chart.dataset.updates).toBe("3");
    expect(chart.dataset.snapshots).toBe("2");
    const lines = [...chart.querySelectorAll(".nw-line")];
    expect(lines.map((g) => g.dataset.unit)).toEqual(["1", "4", "6"]);
    expect(lines[2].querySelectorAll("circle")).toHaveLength(2);
    expect(lines[0].querySelector("polyline").getAttribute("stroke")).toBe(COLOURS[0]);
    expect(lines[2].querySelector("title").textContent).toBe("unit 6: rank 3, from rank 8");
    expect(lines[2].querySelector(".nw-line-label").textContent).toBe("unit 6");
    // the worst rank shown (8) sits on the bottom axis; the best (1) at the top
    const ys = [...lines[2].querySelectorAll("circle")].map((c) => Number(c.getAttribute("cy")));
    expect(ys[0]).toBeGreaterThan(ys[1]);
    expect(el.querySelector(".nw-subtitle").textContent).toContain("step 20 · 2 snapshots every 10 steps");
    expect(el.querySelector(".nw-stability-text").textContent).toContain("last 0.5000");
    expect(el.querySelector(".nw-died").textContent).toBe("died since step 10: unit 3");
    expect(el.querySelector(".nw-emerged").textContent).toBe("emerged since step 10: unit 6");
  });

  it("says where a logdir's run is written and whether it goes on, as text", async () => {
    const { el, model } = setup();
    model.pythonSet({ info: { ...model.get("info"), logdir: EVIL, live: true } });
    await tick();
    const subtitle = el.querySelector(".nw-subtitle");
    expect(subtitle.textContent).toBe(`every 10 steps · live: ${EVIL}`);
    snapshot(model, [10], [{ unit: 4, ranks: [0] }], []);
    model.pythonSet({ info: { ...model.get("info"), live: false } });
    await tick();
    expect(subtitle.textContent).toContain("step 10 · 1 snapshot every 10 steps");
    expect(subtitle.textContent).toMatch(/ · finished: <img src=x onerror=alert\(1\)>$/);
    expect(el.querySelector("img")).toBeNull();
  });

  it("skips undefined stability values and shows kernel errors", async () => {
    const { el, model } = setup();
    snapshot(model, [1, 2, 3], [{ unit: 0, ranks: [0, 0, 0] }], [null, 0.25]);
    await tick();
    expect(el.querySelector(".nw-spark-line").getAttribute("points").split(" ")).toHaveLength(1);
    expect(el.querySelector(".nw-stability-text").textContent).toContain("lowest 0.2500");
    model.pythonSet({ error: EVIL });
    expect(el.querySelector(".nw-error-text").textContent).toBe(EVIL);
    expect(el.querySelector("img")).toBeNull();
  });

  it("keeps end-of-line labels apart", () => {
    expect(spread([10, 10, 50, 12], 12)).toEqual([10, 22, 50, 34]);
  });

  it("removes its listeners", () => {
    const { model, cleanup } = setup();
    expect(model.listenerCount()).toBeGreaterThan(0);
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });
});

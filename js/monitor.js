// @ts-check
/** MonitorView: the rank of the top units over training steps, died/emerged units, rank stability.
 *
 * Display only: the kernel is busy running the training cell, so every update comes from Python. The
 * changes of one snapshot arrive together and are drawn once; `data-updates` on the chart counts draws. */
import { h, listen } from "./lib/dom.js";
import { score } from "./lib/format.js";
import { lasting } from "./lib/lasting.js";
import { teardown } from "./lib/model.js";
import { statusStrip } from "./lib/status.js";
import { linear, svg } from "./lib/svg.js";

export const WIDTH = 560;
export const HEIGHT = 220;
const PAD = { left: 40, right: 70, top: 10, bottom: 28 };
const SPARK = { width: 160, height: 28 };
const LABEL_GAP = 12; // least vertical distance between two end-of-line labels
// Tableau 10: distinguishable lines in light and dark themes
export const COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/** @param {number[]} units @returns {string} */
function unitList(units) {
  return units.length ? units.map((u) => `unit ${u}`).join(", ") : "none";
}

/**
 * Label positions near ``wanted`` (same order), pushed apart so that no two are closer than ``gap``.
 * @param {number[]} wanted @param {number} gap @returns {number[]}
 */
export function spread(wanted, gap) {
  const order = wanted.map((_, i) => i).sort((a, b) => wanted[a] - wanted[b]);
  const placed = [...wanted];
  order.forEach((i, k) => {
    if (k > 0) placed[i] = Math.max(wanted[i], placed[order[k - 1]] + gap);
  });
  return placed;
}

/** @param {{ model: import("./lib/model.js").Model, el: HTMLElement }} ctx */
function render({ model, el }) {
  let updates = 0;
  let scheduled = false;
  const title = h("div", { class: "nw-title" });
  const subtitle = h("div", { class: "nw-subtitle" });
  const chart = svg("svg", {
    class: "nw-monitor-chart",
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": "rank of the top units over training steps",
  });
  const spark = svg("svg", { class: "nw-sparkline", viewBox: `0 0 ${SPARK.width} ${SPARK.height}`, "aria-hidden": "true" });
  const stabilityText = h("span", { class: "nw-stability-text" });
  const died = h("div", { class: "nw-died" });
  const emerged = h("div", { class: "nw-emerged" });
  const status = statusStrip(model);
  const root = h("div", { class: "nw-root nw-monitor" }, [
    h("div", { class: "nw-heading" }, [title, subtitle]),
    status.el,
    chart,
    h("div", { class: "nw-stability" }, [spark, stabilityText]),
    died,
    emerged,
  ]);
  el.replaceChildren(root);

  function drawChart() {
    /** @type {number[]} */
    const steps = model.get("steps") || [];
    /** @type {{ unit: number, ranks: number[] }[]} */
    const lines = model.get("lines") || [];
    const worst = Math.max(1, ...lines.flatMap((l) => l.ranks));
    const x = linear(steps[0] ?? 0, steps.at(-1) ?? 0, PAD.left, WIDTH - PAD.right);
    const y = linear(0, worst, PAD.top, HEIGHT - PAD.bottom);
    const axes = [
      svg("line", { class: "nw-axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: HEIGHT - PAD.bottom }),
      svg("line", { class: "nw-axis", x1: PAD.left, x2: WIDTH - PAD.right, y1: HEIGHT - PAD.bottom, y2: HEIGHT - PAD.bottom }),
      svg("text", { class: "nw-tick", x: PAD.left - 4, y: y(0) + 4, "text-anchor": "end" }, [], "1"),
      svg("text", { class: "nw-tick", x: PAD.left - 4, y: y(worst) + 4, "text-anchor": "end" }, [], String(worst + 1)),
      svg("text", { class: "nw-tick", x: 12, y: (PAD.top + HEIGHT - PAD.bottom) / 2, transform: `rotate(-90 12 ${(PAD.top + HEIGHT - PAD.bottom) / 2})`, "text-anchor": "middle" }, [], "rank"),
    ];
    if (steps.length) {
      axes.push(svg("text", { class: "nw-tick", x: x(steps[0]), y: HEIGHT - 12, "text-anchor": "middle" }, [], String(steps[0])));
      if (steps.length > 1) axes.push(svg("text", { class: "nw-tick", x: x(steps.at(-1) ?? 0), y: HEIGHT - 12, "text-anchor": "middle" }, [], String(steps.at(-1))));
      axes.push(svg("text", { class: "nw-tick", x: (PAD.left + WIDTH - PAD.right) / 2, y: HEIGHT - 2, "text-anchor": "middle" }, [], "training step"));
    } else {
      axes.push(svg("text", { class: "nw-tick", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, [], "waiting for the first snapshot…"));
    }
    const labelY = spread(lines.map(({ ranks }) => y(ranks.at(-1) ?? 0) + 4), LABEL_GAP);
    const drawn = lines.map(({ unit, ranks }, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const points = ranks.map((r, j) => `${x(steps[j]).toFixed(1)},${y(r).toFixed(1)}`).join(" ");
      const last = ranks.at(-1) ?? 0;
      const change = ranks.length > 1 ? `, from rank ${ranks[0] + 1}` : "";
      return svg("g", { class: "nw-line", "data-unit": unit }, [
        svg("title", {}, [], `unit ${unit}: rank ${last + 1}${change}`),
        svg("polyline", { points, fill: "none", stroke: colour, "stroke-width": 2 }),
        ...ranks.map((r, j) => svg("circle", { cx: x(steps[j]).toFixed(1), cy: y(r).toFixed(1), r: 2.5, fill: colour })),
        svg("text", { class: "nw-line-label", x: WIDTH - PAD.right + 6, y: labelY[i], fill: colour }, [], `unit ${unit}`),
      ]);
    });
    chart.replaceChildren(...axes, ...drawn);
    chart.dataset.snapshots = String(steps.length);
  }

  function drawStability() {
    /** @type {(number | null)[]} */
    const values = model.get("stability") || [];
    const x = linear(0, Math.max(1, values.length - 1), 2, SPARK.width - 2);
    const y = linear(-1, 1, SPARK.height - 2, 2);
    const points = values.flatMap((v, i) => (v === null ? [] : [`${x(i).toFixed(1)},${y(v).toFixed(1)}`])).join(" ");
    spark.replaceChildren(
      svg("line", { class: "nw-axis", x1: 0, x2: SPARK.width, y1: y(1), y2: y(1) }),
      svg("polyline", { points, fill: "none", class: "nw-spark-line", "stroke-width": 1.5 }),
    );
    const known = /** @type {number[]} */ (values.filter((v) => v !== null));
    stabilityText.textContent = known.length
      ? `rank stability (Spearman with the previous snapshot): last ${score(known.at(-1))}, lowest ${score(Math.min(...known))}`
      : "rank stability: needs two snapshots";
  }

  function draw() {
    scheduled = false;
    const info = model.get("info") || {};
    title.textContent = `${info.method ?? ""} · layer ${info.layer ?? ""} · ${info.units ?? 0} units · top ${model.get("top")}`;
    const every = info.every === 1 ? "every step" : `every ${info.every} steps`;
    const snapshots = info.snapshots === 1 ? "1 snapshot" : `${info.snapshots} snapshots`;
    const progress =
      info.step === null || info.step === undefined
        ? every
        : `step ${info.step} · ${snapshots} ${every} · last took ${info.seconds.toFixed(2)} s, all ${info.monitor_seconds.toFixed(1)} s`;
    // over a logdir (MonitorView.from_logdir): where the run is written, and whether it is still going on
    const run = info.logdir === undefined ? "" : ` · ${info.live ? "live" : "finished"}: ${info.logdir}`;
    subtitle.textContent = progress + run;
    drawChart();
    drawStability();
    const first = model.get("steps")?.[0];
    died.textContent = `died since step ${first ?? "–"}: ${unitList(model.get("died") || [])}`;
    emerged.textContent = `emerged since step ${first ?? "–"}: ${unitList(model.get("emerged") || [])}`;
    updates += 1;
    chart.dataset.updates = String(updates);
  }

  /** The traits of one snapshot change together: draw once, after the last of them. */
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(draw);
  }

  const cleanup = teardown([
    listen(
      model,
      ["change:steps", "change:lines", "change:stability", "change:died", "change:emerged", "change:info", "change:top"],
      schedule,
    ),
    status.cleanup,
  ]);
  draw();
  return cleanup;
}

export default { render: lasting(render) };

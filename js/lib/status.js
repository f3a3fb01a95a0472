// @ts-check
/** The status strip every widget shares: progress bar with ETA and cancel, a note once cancelled, and errors
 * from the kernel. */
import { h, listen } from "./dom.js";
import { seconds } from "./format.js";
import { teardown } from "./model.js";

/**
 * Build the strip and keep it in sync with the model's status, progress and error traits.
 * @param {import("@anywidget/types").AnyModel<any>} model
 * @param {{ cancellable?: boolean }} [options]
 * @returns {{ el: HTMLElement, cleanup: () => void }}
 */
export function statusStrip(model, { cancellable = false } = {}) {
  const bar = h("div", { class: "nw-progress-fill" });
  const label = h("span", { class: "nw-progress-label" });
  const cancel = h("button", {
    class: "nw-button nw-cancel",
    text: "Cancel",
    attrs: { type: "button", "aria-label": "cancel the running computation" },
    on: { click: () => model.send({ type: "cancel" }) },
  });
  const progress = h("div", { class: "nw-progress", attrs: { role: "status" } }, [
    h("div", { class: "nw-progress-track", attrs: { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 } }, [
      bar,
    ]),
    label,
    cancellable ? cancel : null,
  ]);
  const message = h("span", { class: "nw-error-text" });
  const error = h("div", { class: "nw-error", attrs: { role: "alert" } }, [
    message,
    h("button", {
      class: "nw-button nw-dismiss",
      text: "×",
      attrs: { type: "button", "aria-label": "dismiss the error" },
      on: { click: () => model.send({ type: "dismiss" }) },
    }),
  ]);
  const stopped = h("div", {
    class: "nw-cancelled",
    text: "Cancelled: this view still shows its last finished result.",
    attrs: { role: "status" },
  });
  const el = h("div", { class: "nw-status" }, [progress, stopped, error]);

  function update() {
    const status = model.get("status");
    const info = model.get("progress") || {};
    const running = status === "running";
    progress.hidden = !running;
    stopped.hidden = status !== "cancelled";
    el.dataset.status = status;
    if (running) {
      const fraction = info.total ? Math.min(1, info.done / info.total) : null;
      bar.style.width = fraction === null ? "100%" : `${(100 * fraction).toFixed(1)}%`;
      bar.classList.toggle("nw-indeterminate", fraction === null);
      bar.parentElement?.setAttribute("aria-valuenow", String(fraction === null ? 0 : Math.round(100 * fraction)));
      const what = info.description || "working";
      label.textContent = fraction === null ? `${what}…` : `${what}: ${Math.round(100 * fraction)}%, ${timeLeft(info.eta)}`;
    }
    const text = model.get("error");
    error.hidden = !text;
    message.textContent = text || "";
  }

  /** @param {any} msg */
  function onMessage(msg) {
    if (msg && msg.type === "error" && typeof msg.message === "string") {
      error.hidden = false;
      message.textContent = msg.message;
    }
  }

  update();
  const cleanup = teardown([
    listen(model, ["change:status", "change:progress", "change:error"], update),
    listen(model, ["msg:custom"], onMessage),
  ]);
  return { el, cleanup };
}

/**
 * The time left as the strip shows it; the kernel sends no ETA until a step after the warm-up is timed.
 * @param {number | null | undefined} eta seconds
 * @returns {string}
 */
export function timeLeft(eta) {
  return eta === null || eta === undefined ? "estimating time left…" : `${seconds(eta)} left`;
}

import { describe, expect, it } from "vitest";
import { FakeModel } from "../testing/fake-model.js";
import { statusStrip, timeLeft } from "./status.js";

describe("status strip's time left", () => {
  it("says it is estimating until the kernel sends an ETA timed after the warm-up", () => {
    expect(timeLeft(null)).toBe("estimating time left…");
    expect(timeLeft(undefined)).toBe("estimating time left…");
    expect(timeLeft(75)).toBe("1 min 15 s left");
    const model = new FakeModel({ status: "running", progress: { description: "ablating", done: 1, total: 50, eta: null }, error: "" });
    const strip = statusStrip(model);
    expect(strip.el.textContent).toContain("ablating: 2%, estimating time left…");
    model.pythonSet({ progress: { description: "ablating", done: 2, total: 50, eta: 48 } });
    expect(strip.el.textContent).toContain("ablating: 4%, 48 s left");
    expect(strip.el.querySelector(".nw-cancelled").hidden).toBe(true);
    model.pythonSet({ status: "cancelled", progress: {} });
    expect(strip.el.querySelector(".nw-progress").hidden).toBe(true);
    const note = strip.el.querySelector(".nw-cancelled");
    expect(note.hidden).toBe(false);
    expect(note.textContent).toBe("Cancelled: this view still shows its last finished result.");
    model.pythonSet({ status: "idle" });
    expect(note.hidden).toBe(true);
    strip.cleanup();
  });
});

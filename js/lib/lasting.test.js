import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeModel } from "../testing/fake-model.js";
import { lasting } from "./lasting.js";

/** jsdom has no ResizeObserver (and no layout): this one reports every observed element on `fire()`. */
class FakeResizeObserver {
  /** @type {Set<FakeResizeObserver>} */
  static all = new Set();
  /** @param {Function} callback */
  constructor(callback) {
    this.callback = callback;
    this.targets = new Set();
    FakeResizeObserver.all.add(this);
  }
  /** @param {Element} el */
  observe(el) {
    this.targets.add(el);
  }
  disconnect() {
    FakeResizeObserver.all.delete(this);
  }
  static fire() {
    for (const ro of FakeResizeObserver.all) ro.callback([...ro.targets].map((target) => ({ target })));
  }
}

const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));

/** A view with a focusable, scrollable element; counts renders and cleanups. */
function counted() {
  const counts = { renders: 0, cleanups: 0 };
  const render = lasting(({ el }) => {
    counts.renders += 1;
    const list = document.createElement("div");
    list.className = "list";
    list.tabIndex = 0;
    Object.defineProperty(list, "scrollTop", { value: 0, writable: true }); // jsdom does not scroll
    el.replaceChildren(list);
    return () => (counts.cleanups += 1);
  });
  return { render, counts };
}

/** Like JupyterLab: render into a detached element, then attach it to the output's node. */
function show(render, model, output) {
  const el = document.createElement("div");
  const cleanup = render({ model, el });
  output.append(el);
  FakeResizeObserver.fire();
  return { el, cleanup };
}

/** Like JupyterLab's answer to update_display_data: detach the view and show a new one in its place. */
async function redisplay(render, model, output) {
  output.textContent = "Loading widget...";
  const el = document.createElement("div");
  const cleanup = render({ model, el });
  output.replaceChildren(el);
  await frame();
  FakeResizeObserver.fire();
  return { el, cleanup };
}

describe("lasting views", () => {
  beforeEach(() => {
    globalThis.ResizeObserver = FakeResizeObserver;
  });
  afterEach(() => {
    delete globalThis.ResizeObserver;
    FakeResizeObserver.all.clear();
    document.body.replaceChildren();
  });

  it("a view re-created in place takes over the old DOM with its scroll position and focus", async () => {
    const { render, counts } = counted();
    const model = new FakeModel({ _key: "a" });
    const output = document.body.appendChild(document.createElement("div"));
    const first = show(render, model, output);
    const list = /** @type {HTMLElement} */ (first.el.querySelector(".list"));
    list.focus();
    list.scrollTop = 120;
    list.dispatchEvent(new Event("scroll"));

    const second = await redisplay(render, model, output);
    expect(second.el.querySelector(".list")).toBe(list);
    expect(counts.renders).toBe(1);
    expect(list.scrollTop).toBe(120);
    expect(document.activeElement).toBe(list);

    first.cleanup(); // JupyterLab disposes the detached view with the output; the DOM lives on
    expect(counts.cleanups).toBe(0);
    second.cleanup();
    expect(counts.cleanups).toBe(1);
  });

  it("does not take the focus back when the user had moved it elsewhere", async () => {
    const { render } = counted();
    const model = new FakeModel({ _key: "b" });
    const output = document.body.appendChild(document.createElement("div"));
    const elsewhere = document.body.appendChild(document.createElement("input"));
    const first = show(render, model, output);
    /** @type {HTMLElement} */ (first.el.querySelector(".list")).focus();
    elsewhere.focus();
    await Promise.resolve();
    elsewhere.blur(); // the focus is nowhere when the view is re-created
    await redisplay(render, model, output);
    expect(document.activeElement).toBe(document.body);
  });

  it("a model shown twice keeps one DOM per output, also when both are re-created", async () => {
    const { render, counts } = counted();
    const model = new FakeModel({ _key: "c" });
    const [one, two] = [0, 1].map(() => document.body.appendChild(document.createElement("div")));
    const a = show(render, model, one);
    const b = show(render, model, two);
    expect(counts.renders).toBe(2);
    const [listA, listB] = [a.el, b.el].map((el) => el.querySelector(".list"));

    one.textContent = two.textContent = "Loading widget...";
    const views = [one, two].reverse().map((output) => {
      const el = document.createElement("div");
      render({ model, el });
      output.replaceChildren(el);
      return el;
    });
    await frame();
    expect(views[1].querySelector(".list")).toBe(listA);
    expect(views[0].querySelector(".list")).toBe(listB);
    expect(counts.renders).toBe(2);
  });

  it("renders afresh where no view of the model was detached, and without a model key", async () => {
    const { render, counts } = counted();
    const model = new FakeModel({ _key: "d" });
    const output = document.body.appendChild(document.createElement("div"));
    const first = show(render, model, output);
    first.cleanup(); // a removed view is not taken over
    output.replaceChildren();
    await redisplay(render, model, output);
    expect(counts.renders).toBe(2);

    const plain = lasting(({ el }) => {
      el.textContent = "plain";
    });
    const el = document.createElement("div");
    plain({ model: new FakeModel({}), el })();
    expect(el.textContent).toBe("plain");
  });
});

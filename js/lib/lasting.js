// @ts-check
/**
 * Views that outlive their re-creation.
 *
 * The kernel keeps the picture in a widget's saved output current by re-sending the output
 * (update_display_data). JupyterLab answers that by building a new view of the same model and detaching the
 * old view's element without removing the view (jupyterlab_widgets 3, WidgetRenderer.renderModel); scroll
 * positions and the keyboard focus are lost with the detach. With `lasting(render)`, a new view that appears
 * where a view of its model was just detached takes over that view's DOM (the same elements, listeners and
 * decoded images) and puts its scroll positions and focus back, before the browser paints: nothing visible
 * happens. Anywhere else it renders as usual.
 */

/** Ancestors of a view's box that are remembered: a re-creation detaches the view within them. */
const REACH = 4;

/**
 * @typedef {Object} Kept a rendered view's DOM, which may pass from view to view
 * @property {HTMLElement} box the element the view was rendered into
 * @property {() => void} cleanup the render's cleanup, called when the last view holding it goes
 * @property {number} owners views holding it
 * @property {Element[]} chain the box and its ancestors, as last seen in the document
 * @property {Map<Element, [number, number]>} scrolls scroll positions (top, left) inside the box
 * @property {HTMLElement | null} focused the element inside the box that had the focus
 */

/** @type {Map<string, Set<Kept>>} per model (its `_key` trait) */
const byModel = new Map();

/**
 * Wrap an anywidget `render` so that its DOM survives the view's re-creation.
 * @template {{ model: { get(key: string): any }, el: HTMLElement }} C
 * @param {(ctx: C) => (void | (() => void))} render
 * @returns {(ctx: C) => (() => void)}
 */
export function lasting(render) {
  return (ctx) => {
    const key = ctx.model.get("_key");
    if (!key || typeof ResizeObserver === "undefined") {
      const cleanup = render(ctx);
      return () => cleanup?.();
    }
    const kept = byModel.get(key) ?? new Set();
    byModel.set(key, kept);
    /** @type {Kept | null} */
    let mine = null;
    let gone = false;
    const remember = new ResizeObserver(() => {
      if (mine?.box.isConnected) mine.chain = chainOf(mine.box);
    });
    /** @param {Kept} k */
    const hold = (k) => {
      mine = k;
      k.owners += 1;
      remember.observe(k.box);
    };
    const fresh = () => {
      const k = keep((el) => render({ ...ctx, el }));
      kept.add(k);
      ctx.el.replaceChildren(k.box);
      hold(k);
    };
    const orphans = [...kept].filter((k) => k.chain.length && !k.box.isConnected);
    if (!orphans.length) fresh();
    else {
      whenAttached(ctx.el, () => gone, () => {
        const old = replaced(orphans, ctx.el);
        if (!old) return fresh();
        ctx.el.replaceChildren(old.box);
        hold(old);
        restore(old);
      });
    }
    return () => {
      gone = true;
      remember.disconnect();
      if (!mine || --mine.owners > 0) return;
      kept.delete(mine);
      if (!kept.size) byModel.delete(key);
      mine.cleanup();
    };
  };
}

/**
 * Render into a new box and watch the scroll positions and the focus inside it.
 * @param {(el: HTMLElement) => (void | (() => void))} render
 * @returns {Kept}
 */
function keep(render) {
  const box = document.createElement("div");
  box.className = "nw-box";
  const cleanup = render(box);
  /** @type {Kept} */
  const k = { box, cleanup: () => cleanup?.(), owners: 0, chain: [], scrolls: new Map(), focused: null };
  box.addEventListener(
    "scroll",
    (event) => {
      const target = event.target;
      if (box.isConnected && target instanceof Element) k.scrolls.set(target, [target.scrollTop, target.scrollLeft]);
    },
    true,
  );
  box.addEventListener("focusin", (event) => {
    k.focused = event.target instanceof HTMLElement ? event.target : null;
  });
  // Focus that leaves because the box was detached is remembered; focus the user moved elsewhere is not.
  box.addEventListener("focusout", () =>
    queueMicrotask(() => {
      if (box.isConnected && !box.contains(document.activeElement)) k.focused = null;
    }),
  );
  return k;
}

/**
 * The box and its first ancestors.
 * @param {Element} box
 * @returns {Element[]}
 */
function chainOf(box) {
  const chain = [];
  for (let node = /** @type {Element | null} */ (box); node && chain.length <= REACH; node = node.parentElement) {
    chain.push(node);
  }
  return chain;
}

/**
 * Of the detached views, the one `el` replaces: its nearest ancestor still in the document holds `el`.
 * With several (the model shown twice), the one detached closest to `el`.
 * @param {Kept[]} orphans
 * @param {HTMLElement} el
 * @returns {Kept | null}
 */
function replaced(orphans, el) {
  /** @type {[Kept, Element][]} */
  const matches = [];
  for (const k of orphans) {
    const anchor = k.chain.find((node) => node.isConnected);
    if (!k.box.isConnected && anchor?.contains(el)) matches.push([k, anchor]); // it may be back by now
  }
  matches.sort(([, a], [, b]) => (a.contains(b) ? 1 : b.contains(a) ? -1 : 0));
  return matches[0]?.[0] ?? null;
}

/**
 * Put back the scroll positions, and the focus if it went with the detach and nothing else took it.
 * @param {Kept} k
 */
function restore(k) {
  for (const [node, [top, left]] of k.scrolls) {
    if (!k.box.contains(node)) k.scrolls.delete(node);
    else {
      node.scrollTop = top;
      node.scrollLeft = left;
    }
  }
  const active = document.activeElement;
  if (k.focused && k.box.contains(k.focused) && (!active || active === document.body)) {
    k.focused.focus({ preventScroll: true });
  }
}

/**
 * Run `then` once `el` is in the document, at the latest before the next paint after it got there.
 * @param {HTMLElement} el
 * @param {() => boolean} cancelled
 * @param {() => void} then
 */
function whenAttached(el, cancelled, then) {
  const check = () => {
    if (cancelled()) return;
    if (el.isConnected) then();
    else requestAnimationFrame(check);
  };
  check();
}

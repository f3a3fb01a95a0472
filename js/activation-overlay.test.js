import { describe, expect, it } from "vitest";
import widget from "./activation-overlay.js";
import { PNG, mount } from "./testing/fake-model.js";

const EVIL = "<img src=x onerror=alert(1)>";
const tile = (index, chosen = false) => ({ index, label: EVIL, chosen, peak: 2, vmin: 0, vmax: 2, image: PNG, map: PNG, raw: PNG });

function setup() {
  return mount(widget, {
    unit: 3, layer: EVIL, k: 2, image: null, colormap: "magma", colormaps: ["magma", "viridis"], opacity: 0.6,
    scale: "shared", show_raw: false, image_count: 100, tiles: [tile(7), tile(9)], colorbar: PNG, vrange: [0, 2],
    shown: { unit: 3 },
  });
}

describe("ActivationOverlay view", () => {
  it("shows each image with its map from PNG buffers, labels as text", () => {
    const { el } = setup();
    const tiles = el.querySelectorAll(".nw-tile");
    expect(tiles.length).toBe(2);
    expect(tiles[0].querySelectorAll("img").length).toBe(3);
    expect(tiles[0].querySelector(".nw-map").getAttribute("src")).toMatch(/^blob:/);
    expect(tiles[0].querySelector("figcaption").textContent).toContain(EVIL);
    expect(el.querySelector("img[src='x']")).toBeNull();
    expect(el.querySelector(".nw-title").textContent).toBe(`unit 3 · layer ${EVIL} · top 2 images`);
    expect(el.querySelector(".nw-tiles").dataset.unit).toBe("3");
  });

  it("changes opacity in the browser at once, and sends the other choices to the kernel", () => {
    const { model, el } = setup();
    const opacity = el.querySelector(".nw-opacity");
    opacity.value = "0.25";
    opacity.dispatchEvent(new Event("input"));
    expect(el.querySelector(".nw-tiles").style.getPropertyValue("--nw-opacity")).toBe("0.25");
    expect(model.get("opacity")).toBe(0.25);
    const [colormap, scale] = el.querySelectorAll("select");
    colormap.value = "viridis";
    colormap.dispatchEvent(new Event("change"));
    scale.value = "image";
    scale.dispatchEvent(new Event("change"));
    const raw = el.querySelector("input[type=checkbox]");
    raw.checked = true;
    raw.dispatchEvent(new Event("change"));
    const image = el.querySelector(".nw-number");
    image.value = "42";
    image.dispatchEvent(new Event("change"));
    expect(model.saved.slice(1)).toEqual([{ colormap: "viridis" }, { scale: "image" }, { show_raw: true }, { image: 42 }]);
    expect(el.querySelector(".nw-tiles").classList.contains("nw-show-raw")).toBe(true);
    model.pythonSet({ shown: { unit: 3, scale: "image" } }); // the kernel re-rendered with the new scale
    expect(el.querySelector(".nw-colorbar-row").textContent).toContain("max of each image");
  });

  it("revokes old image URLs on new tiles and on cleanup", () => {
    const { model, cleanup } = setup();
    expect(globalThis.liveBlobUrls.size).toBe(7);
    model.pythonSet({ tiles: [tile(1, true)] });
    expect(globalThis.liveBlobUrls.size).toBe(4);
    cleanup();
    expect(globalThis.liveBlobUrls.size).toBe(0);
    expect(model.listenerCount()).toBe(0);
  });
});

import { describe, expect, it } from "vitest";
import widget from "./activation-overlay.js";
import { PNG, loaded, mount, settled } from "./testing/fake-model.js";

const EVIL = "<img src=x onerror=alert(1)>";
const tile = (index, chosen = false) => ({ index, label: EVIL, chosen, peak: 2, vmin: 0, vmax: 2, image: PNG, map: PNG, raw: PNG });

function setup() {
  return mount(widget, {
    unit: 3, layer: EVIL, k: 2, image: null, colormap: "magma", colormaps: ["magma", "viridis"], colormaps_more: ["jet", EVIL], opacity: 0.6,
    scale: "shared", show_raw: false, image_count: 100, tiles: [tile(7), tile(9)], colorbar: PNG, vrange: [0, 2],
    shown: { unit: 3 },
  });
}

describe("ActivationOverlay view", () => {
  it("shows each image with its map from PNG buffers, labels as text", async () => {
    const { el } = setup();
    const tiles = el.querySelectorAll(".nw-tile");
    expect(tiles.length).toBe(2);
    expect(tiles[0].querySelectorAll("img").length).toBe(3);
    expect(tiles[0].querySelector(".nw-map").getAttribute("src")).toMatch(/^blob:/);
    const lines = [...tiles[0].querySelectorAll("figcaption .nw-caption-line")].map((l) => l.textContent);
    expect(lines).toEqual([`#7 · ${EVIL}`, "peak 2.00"]); // two lines that never wrap; the title has it all
    expect(tiles[0].querySelector("figcaption").title).toBe(`#7 · ${EVIL} · peak 2.00`);
    expect(el.querySelector("img[src='x']")).toBeNull();
    expect(el.querySelector(".nw-title").textContent).toBe(`unit 3 · layer ${EVIL} · top 2 images`);
    expect(el.querySelector(".nw-tiles").dataset.unit).toBe("3");
  });

  it("offers the short list of colormaps first, the others on request", async () => {
    const { model, el } = setup();
    const menu = el.querySelector("select");
    expect([...menu.options].map((o) => o.textContent)).toEqual(["magma", "viridis", "more… (2)"]);
    menu.value = menu.options[2].value;
    menu.dispatchEvent(new Event("change"));
    expect(model.saved).toEqual([]); // asking for more is not a choice
    expect([...menu.options].map((o) => o.textContent)).toEqual(["magma", "viridis", "jet", EVIL]);
    expect(menu.querySelector("optgroup").label).toBe("more colormaps");
    expect(menu.value).toBe("magma");
    const other = mount(widget, { ...model.state, colormap: "jet" }); // set in Python: the full list at once
    expect(other.el.querySelector("select").value).toBe("jet");
  });

  it("changes opacity in the browser at once, and sends the other choices to the kernel", async () => {
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
    await settled();
    expect(model.saved.slice(1)).toEqual([{ colormap: "viridis" }, { scale: "image" }, { show_raw: true }, { image: 42 }]);
    expect(el.querySelector(".nw-tiles").classList.contains("nw-show-raw")).toBe(true);
    await model.pythonSet({ shown: { unit: 3, scale: "image" } }); // the kernel re-rendered with the new scale
    expect(el.querySelector(".nw-colorbar-row").textContent).toContain("max of each image");
  });

  it("redraws once per kernel update, and frees each image URL once its image has loaded", async () => {
    const { model, el, cleanup } = setup();
    const first = [...el.querySelectorAll("img")];
    expect(globalThis.liveBlobUrls.size).toBe(7); // the colour bar and 2 tiles of 3 images
    await model.pythonSet({ tiles: [tile(1, true)], vrange: [0, 2], shown: { unit: 1, scale: "layer" } });
    // one redraw (4 new URLs, not 3 x 4), and the replaced images keep theirs until they loaded: revoking a
    // URL the browser still fetches fails the fetch (ERR_FILE_NOT_FOUND)
    expect(globalThis.liveBlobUrls.size).toBe(11);
    loaded(first); // the old tiles and the colour bar (whose new picture is loaded too)
    expect(globalThis.liveBlobUrls.size).toBe(3);
    const second = [...el.querySelectorAll("img")];
    cleanup();
    loaded(second);
    expect(globalThis.liveBlobUrls.size).toBe(0);
    expect(model.listenerCount()).toBe(0);
  });
});

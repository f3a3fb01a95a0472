"""ActivationOverlay: the images that excite a unit most, with its activation map laid over each; or, in
contribution mode, the images where the unit adds most to a class's score, with where it does so. Beside them,
on request, the unit's feature visualisation (`Probe.visualize`)."""

from __future__ import annotations

import io
import textwrap
from typing import Any, ClassVar

import numpy as np
import traitlets
from PIL import Image

from neuronwidgets import render
from neuronwidgets.probe import Probe
from neuronwidgets.visualize import Visualization
from neuronwidgets.widgets._base import (
    BadMessage,
    Choice,
    StrictInt,
    Widget,
    asset,
    check_kwargs,
    figure_png,
    index_or_none,
)
from neuronwidgets.widgets._images import display_images, labels_of
from neuronwidgets.widgets._worker import Job, worker_for
from neuronwidgets.widgets.ranked_list import RankedList

MAX_IMAGES = 32
SCALES = ("shared", "image")
MODES = ("activation", "contribution")


class ActivationOverlay(Widget):
    """The ``k`` images that activate ``unit`` most (and a chosen ``image``), each with the unit's map
    upsampled, coloured by ``colormap`` and laid over it at ``opacity``.

    ``scale="shared"`` uses one colour scale for all maps (comparable), ``"image"`` one per image.
    ``mode="contribution"`` shows instead the images on which the unit adds most to class ``target``'s score
    (None: each image's predicted class) and, over each, its contribution map (`Probe.contribution_maps`),
    coloured by the diverging ``diverging_colormap`` on a scale symmetric about zero: positive where the unit
    raises the class's score, negative where it lowers it.
    Images travel to the browser as PNG buffers; opacity and the raw-map view change in the browser only.
    The view picks ``unit`` with a number field and previous/next buttons; ``follow(ranked_list)`` makes it
    show the unit selected in a `RankedList`. The tile before the images shows, once asked for (its button, or
    `visualize`), the unit's feature visualisation: an input optimised to excite it (``visual``).
    """

    _esm = asset("activation-overlay.js")
    _css = asset("widgets.css")

    unit = StrictInt(0, min=0).tag(sync=True, option=True)
    layer = traitlets.Unicode("").tag(sync=True, option=True)
    k = StrictInt(8, min=1, max=MAX_IMAGES).tag(sync=True, option=True)
    image = StrictInt(None, allow_none=True, min=0).tag(sync=True, option=True)
    colormap = Choice(render.colormap_names(), "magma").tag(sync=True, option=True)
    colormaps = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the menu's first, short list
    colormaps_more = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the rest, on request
    mode = Choice(MODES, "activation").tag(sync=True, option=True)
    target = StrictInt(None, allow_none=True, min=0).tag(sync=True, option=True)  # contribution's class
    diverging_colormap = Choice(render.colormap_names(), "RdBu_r").tag(sync=True, option=True)  # contribution's
    diverging_colormaps = traitlets.List(traitlets.Unicode()).tag(sync=True)  # its menu's short list
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)  # class names, for the class picker
    opacity = traitlets.Float(0.6, min=0.0, max=1.0).tag(sync=True, option=True)
    scale = Choice(SCALES, "shared").tag(sync=True, option=True)
    show_raw = traitlets.Bool(False).tag(sync=True, option=True)
    hide_border = traitlets.Bool(False).tag(sync=True, option=True)  # the maps' outer ring (zero padding)
    units = traitlets.Int(0).tag(sync=True)  # number of units in the layer
    image_count = traitlets.Int(0).tag(sync=True)  # number of images in the data
    tiles = traitlets.List().tag(sync=True)  # [{index, label, chosen, peak, total, vmin, vmax, image, map, raw}]
    colorbar = traitlets.Bytes(b"").tag(sync=True)  # PNG, low values left
    vrange = traitlets.List().tag(sync=True)  # [vmin, vmax] of the shared scale
    shown = traitlets.Dict().tag(sync=True)  # the request the tiles answer: {unit, layer, image, colormap, ...}
    # the feature visualisation tile: {} (not asked for), or {unit, layer, state: "running" | "cancelled" |
    # "error"}, or when done also {image (PNG), activation, best, best_index, steps, seconds}
    visual = traitlets.Dict().tag(sync=True)

    _writable: ClassVar[frozenset[str]] = frozenset(
        {
            "unit",
            "k",
            "image",
            "colormap",
            "opacity",
            "scale",
            "show_raw",
            "hide_border",
            "mode",
            "target",
            "diverging_colormap",
        }
    )
    _handlers: ClassVar[dict[str, str]] = {**Widget._handlers, "visualize": "_on_visualize", "cancel": "cancel"}
    _following: RankedList | None = None

    def __init__(self, probe: Probe, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs)
        if not isinstance(probe, Probe):
            raise TypeError(f"ActivationOverlay needs a Probe, got {type(probe).__name__}")
        self._probe = probe
        self._worker = worker_for(probe)
        self._visualised: set[tuple[str, int]] = set()  # (layer, unit) whose visualisation was asked for
        layer = kwargs.pop("layer", probe.layer)
        if layer not in probe.layers:
            raise ValueError(f"unknown layer {layer!r}; valid: {', '.join(probe.layers)}")
        first, more = render.offered_colormaps()
        super().__init__(
            layer=layer,
            units=probe.layer_info(layer).units,
            image_count=len(probe.source),
            colormaps=first,
            colormaps_more=more,
            diverging_colormaps=render.offered_diverging_colormaps(),
            classes=probe.classes,
        )
        with self.hold_trait_notifications():
            for key, value in kwargs.items():
                setattr(self, key, value)
        self.observe(
            self._on_change,
            names=["unit", "k", "image", "colormap", "scale", "hide_border", "mode", "target", "diverging_colormap"],
        )
        self.observe(self._on_layer, names=["layer"])
        self.refresh()

    # -- validation ---------------------------------------------------------------------------------------

    @traitlets.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        if not 0 <= proposal["value"] < self.units:
            raise traitlets.TraitError(
                f"unit must be in 0..{self.units - 1} (layer {self.layer!r}), got {proposal['value']}"
            )
        return proposal["value"]

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        if proposal["value"] not in self._probe.layers:
            raise traitlets.TraitError(f"unknown layer {proposal['value']!r}; valid: {', '.join(self._probe.layers)}")
        return proposal["value"]

    @traitlets.validate("target")
    def _valid_target(self, proposal: dict) -> int | None:
        return index_or_none(proposal["value"], len(self._probe.classes), "target must be a class index")

    @traitlets.validate("image")
    def _valid_image(self, proposal: dict) -> int | None:
        return index_or_none(proposal["value"], self.image_count, "image must be an index")

    # -- following a ranked list -------------------------------------------------------------------------

    def follow(self, ranked_list: RankedList) -> None:
        """Show the unit selected in ``ranked_list`` (now, and whenever a row is clicked), until `unfollow`.

        The list must rank this overlay's layer (unit numbers are per layer); when its layer picker changes
        the layer, the overlay shows that layer too. A list with nothing selected leaves the unit as it is.
        Following another list stops following this one. Nothing is ever set on the list or the probe.
        """
        if not isinstance(ranked_list, RankedList):
            raise TypeError(f"follow needs a RankedList, got {type(ranked_list).__name__}")
        if ranked_list.layer != self.layer:
            raise ValueError(
                f"the RankedList ranks layer {ranked_list.layer!r} but this overlay shows layer {self.layer!r}; "
                f"set overlay.layer = {ranked_list.layer!r} first, or follow a list of layer {self.layer!r}"
            )
        self.unfollow()
        ranked_list.observe(self._on_followed_unit, names=["selected_unit"])
        ranked_list.observe(self._on_followed_layer, names=["layer"])
        self._following = ranked_list
        self._on_followed_unit({"new": ranked_list.selected_unit})

    def unfollow(self) -> None:
        """Stop following the list `follow` was given (if any); the overlay keeps the unit it shows."""
        ranked_list, self._following = self._following, None
        if ranked_list is not None:
            ranked_list.unobserve(self._on_followed_unit, names=["selected_unit"])
            ranked_list.unobserve(self._on_followed_layer, names=["layer"])

    @property
    def following(self) -> RankedList | None:
        """The `RankedList` whose selected unit the overlay shows, or None."""
        return self._following

    def close(self) -> None:
        self.unfollow()
        super().close()

    # The two handlers run inside the list's trait change: what the overlay refuses is shown in the overlay,
    # never raised into the list (which would put its front end back).

    def _on_followed_unit(self, change: dict) -> None:
        unit, ranked_list = change["new"], self._following
        if unit is None or ranked_list is None:
            return
        if ranked_list.layer != self.layer:
            self.report(
                f"unit {unit} selected in the followed list is of layer {ranked_list.layer!r}, but this overlay "
                f"shows layer {self.layer!r}: not shown (set overlay.layer = {ranked_list.layer!r})"
            )
            return
        try:
            self.unit = unit
        except traitlets.TraitError as err:
            self.report(err)

    def _on_followed_layer(self, change: dict) -> None:
        try:
            self.layer = change["new"]
        except traitlets.TraitError as err:
            self.report(err)

    # -- rendering ----------------------------------------------------------------------------------------

    def _on_layer(self, change: dict) -> None:
        with self.hold_trait_notifications():
            self.units = self._probe.layer_info(change["new"]).units
            if self.unit >= self.units:
                self.unit = 0
        self.refresh()

    def _on_change(self, change: dict) -> None:
        unused = {"colormap"} if self.mode == "contribution" else {"target", "diverging_colormap"}
        if change["name"] in unused:
            return  # a setting of the other mode: nothing drawn changes
        self.refresh()

    def refresh(self) -> None:
        """Render the overlays for the current unit and settings in the background (latest request wins)."""
        probe, layer, unit, k, image = self._probe, self.layer, self.unit, self.k, self.image
        scale, hide_border, mode = self.scale, self.hide_border, self.mode
        contribution = mode == "contribution"
        target = self.target if contribution else None
        colormap = self.diverging_colormap if contribution else self.colormap

        def run(job: Job) -> dict:
            # the pass top_images reads (once per layer, and class, cached): its progress shows in this widget,
            # not as a tqdm bar in whichever cell ran last, and Cancel stops it
            progress, cancel = self._progress_callback(job), job.cancel
            top = probe.top_images(unit, k, layer=layer, by=mode, target=target, progress=progress, cancel=cancel)
            indices = [int(i) for i in top]
            if image is not None:
                indices = [image, *[i for i in indices if i != image]][: k + 1]
            if contribution:
                maps = probe.contribution_maps(unit, indices, target=target, layer=layer)
            else:
                maps = probe.activation_maps(unit, indices, layer=layer)
            return render_tiles(
                probe, indices, maps, colormap, scale, chosen=image, hide_border=hide_border, symmetric=contribution
            )

        def done(result: dict) -> None:
            self.tiles, self.vrange, self.colorbar = result["tiles"], result["vrange"], result["colorbar"]
            self.shown = {
                "unit": unit,
                "layer": layer,
                "image": image,
                "colormap": colormap,
                "scale": scale,
                "hide_border": hide_border,
                "mode": mode,
                "target": target,
            }

        self._submit("overlay", run, done)
        self._sync_visual()

    # -- feature visualisation ----------------------------------------------------------------------------

    def visualize(self) -> None:
        """Compute the feature visualisation of the unit shown (`Probe.visualize`, its default options) in the
        background and show it in the tile before the images. The overlay remembers the units asked for: when
        one is shown again, so is its visualisation (from the probe's cache, or computed again after the model
        changed)."""
        self._visualised.add((self.layer, self.unit))
        if (self.visual.get("layer"), self.visual.get("unit"), self.visual.get("state")) != (
            self.layer,
            self.unit,
            "running",
        ):  # else it is on its way
            self._request_visual()

    def cancel(self) -> None:
        """Stop the overlay's work in progress (the images, the visualisation); it keeps what it showed."""
        assert self._worker is not None
        self._worker.cancel(self._slot("overlay"))
        layer, unit = self.layer, self.unit
        if self._worker.cancel(self._slot("visualize")) or self.visual.get("state") == "running":
            self._visualised.discard((layer, unit))
            self.visual = {"unit": unit, "layer": layer, "state": "cancelled"}

    def _on_visualize(self, unit: Any = None, layer: Any = None) -> None:
        if isinstance(unit, bool) or not isinstance(unit, int) or not isinstance(layer, str):
            raise BadMessage("a visualize message names the unit shown (an integer) and its layer (a string)")
        if (layer, unit) == (self.layer, self.unit):  # else asked for a unit no longer shown: stale
            self.visualize()

    def _sync_visual(self) -> None:
        """After a change of unit, layer or model: the tile is the current unit's (cleared, or asked for again
        where that unit's visualisation was asked for before); a stale request is cancelled."""
        layer, unit, visual = self.layer, self.unit, self.visual
        same = (visual.get("layer"), visual.get("unit")) == (layer, unit)
        if same and visual.get("state") == "running":
            return
        if not same:
            assert self._worker is not None
            self._worker.cancel(self._slot("visualize"))
            self.visual = {}
        if (layer, unit) in self._visualised:
            self._request_visual()

    def _request_visual(self) -> None:
        """Compute (or read from the probe's cache) the visualisation of the unit shown, in the background;
        the tile says "running" meanwhile unless it already shows this unit's."""
        probe, layer, unit = self._probe, self.layer, self.unit
        visual = self.visual
        if (visual.get("layer"), visual.get("unit"), visual.get("state")) != (layer, unit, "done"):
            self.visual = {"unit": unit, "layer": layer, "state": "running"}

        def run(job: Job) -> dict:
            progress = self._progress_callback(job)
            result = probe.visualize(unit, layer=layer, progress=progress, cancel=job.cancel)
            means = probe.site(layer).summary(progress, job.cancel).image_mean[:, unit]
            return visual_tile(result, means)

        submitted: list[Job] = []

        def ended(state: str) -> None:
            """Cancelled or failed: the tile says so, unless it is another unit's or a newer job runs."""
            assert self._worker is not None
            newer = self._worker.latest(self._slot("visualize")) not in (None, *submitted)
            running = {"unit": unit, "layer": layer, "state": "running"}
            if not newer and self.visual == running:
                self._visualised.discard((layer, unit))  # not asked for again until its button is pressed
                self.visual = {**running, "state": state}

        def done(tile: dict) -> None:
            if (self.layer, self.unit) == (layer, unit):  # else the unit changed while the result landed
                self.visual = tile

        job = self._submit(
            "visualize", run, done, on_cancel=lambda: ended("cancelled"), on_error=lambda _: ended("error")
        )
        submitted.append(job)

    # -- static picture -----------------------------------------------------------------------------------

    def _draw(self) -> Image.Image:
        """The overlays as the view shows them, each with its caption, and the colour bar with its scale."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure

        if not self.tiles:
            return Image.new("RGB", (320, 40), "white")
        visual = self._visual_shown()
        panels = len(self.tiles) + (visual is not None)
        columns = min(panels, 5)
        rows = -(-panels // columns)
        fig = Figure(figsize=(1.25 * columns + 0.3, 1.45 * rows + 0.75), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        per_image = (self.shown or {}).get("scale", self.scale) == "image"
        flat = list(axes.flat)
        if visual is not None:
            picture = flat.pop(0)
            picture.imshow(np.asarray(Image.open(_bytes_io(visual["image"])).convert("RGB")), interpolation="nearest")
            picture.set_title(_visual_caption(visual), fontsize=6.5, pad=2)
        for ax, tile in zip(flat, self.tiles):
            image = np.asarray(Image.open(_bytes_io(tile["image"])).convert("RGB"))
            colored = np.asarray(Image.open(_bytes_io(tile["map"])).convert("RGBA"))  # the border may be clear
            ax.imshow(render.blend(image, colored, self.opacity), interpolation="nearest")
            ax.set_title(_caption(tile, per_image), fontsize=6.5, pad=2)
        colormap = (self.shown or {}).get("colormap", self.colormap)
        low, high = (0.0, 1.0) if per_image or not self.vrange else self.vrange
        bar = fig.colorbar(
            ScalarMappable(Normalize(low, high), colormap), ax=axes, orientation="horizontal", shrink=0.6, aspect=40
        )
        bar.ax.tick_params(labelsize=6.5)
        if per_image:
            symmetric = (self.shown or {}).get("mode") == "contribution"
            ends = ("-max |value|", "+max |value|") if symmetric else ("min", "max")
            bar.set_ticks([0.0, 1.0], labels=[f"{end} of each image" for end in ends])
        fig.suptitle(self._title(), fontsize=8)
        return figure_png(fig, dpi=100)

    def describe(self) -> str:
        if not self.tiles:
            return f"activation overlay of unit {self.unit}, layer {self.layer}: not drawn yet"
        images = "; ".join(_caption(tile, False).replace("\n", ", ") for tile in self.tiles[:8])
        what = "contribution" if (self.shown or {}).get("mode") == "contribution" else "activation"
        visual = self._visual_shown()
        caption = "" if visual is None else _visual_caption(visual).replace("\n", ", ")
        beside = f"; its feature visualisation: {caption}" if caption else ""
        return f"{self._title()}: {what} maps laid over the images ({images}){beside}"

    def _visual_shown(self) -> dict | None:
        """The visualisation tile when it shows the unit and layer shown, else None."""
        visual, shown = self.visual, self.shown or {}
        if visual.get("state") != "done" or (visual.get("unit"), visual.get("layer")) != (
            shown.get("unit", self.unit),
            shown.get("layer", self.layer),
        ):
            return None
        return visual

    def _title(self) -> str:
        """What the tiles show, as the live view's title says it."""
        shown = self.shown or {"unit": self.unit, "layer": self.layer}
        chosen = sum(1 for tile in self.tiles if tile.get("chosen"))
        top = len(self.tiles) - chosen
        title = f"unit {shown.get('unit')} · layer {shown.get('layer')} · top {top} images"
        if shown.get("mode") == "contribution":
            target = shown.get("target")
            title += f" for {'the predicted class' if target is None else f'class {self._class_name(target)}'}"
        return title + (f" and image #{shown.get('image')}" if chosen else "")

    def _class_name(self, target: int) -> str:
        return self.classes[target] if target < len(self.classes) else str(target)


def _caption(tile: dict, per_image: bool) -> str:
    """A tile's caption as the live view writes it, in two lines."""
    which = f"{'chosen · ' if tile.get('chosen') else ''}#{tile['index']}"
    if tile.get("label") is not None:
        which += f" · {textwrap.shorten(str(tile['label']), 22, placeholder='…')}"
    value = f"peak {tile['peak']:.3g}" if tile.get("total") is None else f"sum {tile['total']:+.3g}"
    values = value + (f" · {tile['vmin']:.3g}…{tile['vmax']:.3g}" if per_image else "")
    return f"{which}\n{values}"


def _visual_caption(visual: dict) -> str:
    """The visualisation tile's caption as the live view writes it, in two lines."""
    return f"what excites it\nmean {visual['activation']:.3g} · best {visual['best']:.3g}"


def visual_tile(result: Visualization, means: np.ndarray) -> dict:
    """The visualisation tile: its picture as a PNG buffer, the unit's mean activation on it, and the largest
    mean over the data's images (``means``, one per image) with the image that has it."""
    best_index = int(np.argmax(means))
    return {
        "unit": result.unit,
        "layer": result.layer,
        "state": "done",
        "image": render.png(result.image),
        "activation": result.activation,
        "best": float(means[best_index]),
        "best_index": best_index,
        "steps": result.steps,
        "seconds": result.seconds,
    }


def _bytes_io(data: bytes | memoryview) -> io.BytesIO:
    return io.BytesIO(bytes(data))


def render_tiles(
    probe: Probe,
    indices: list[int],
    maps: np.ndarray,
    colormap: str,
    scale: str,
    chosen: int | None,
    hide_border: bool = False,
    symmetric: bool = False,
) -> dict:
    """PNG buffers per image (the image, its coloured upsampled map, its raw map) and the colour scale.

    ``hide_border``: the maps' outer ring of cells, whose values a convolution's zero padding shapes, is
    drawn transparent and left out of the colour scale and the peak. ``symmetric``: scales centred on zero,
    from -m to m with m the largest absolute value (signed maps: contributions), overlays whose opacity grows
    with the value's size (`render.fade_near_zero`), and each tile's ``total`` (its map's sum, border
    included)."""
    images = display_images(probe, indices)
    labels = labels_of(probe, indices)
    counted = render.inner(maps) if hide_border else maps  # the values the scale and the peaks are of

    def span(values: np.ndarray) -> tuple[float, float]:
        if symmetric:
            largest = float(np.abs(values).max())
            return (-largest, largest)
        return (float(values.min()), float(values.max()))

    shared = span(counted)
    tiles = []
    for index, label, image, amap, values in zip(indices, labels, images, maps, counted):
        vmin, vmax = shared if scale == "shared" else span(values)
        if hide_border:
            shown_map = render.colorize_without_border(amap, image.shape[:2], colormap, vmin, vmax)
            raw_map = render.colorize_without_border(amap, amap.shape, colormap, vmin, vmax)
        else:
            shown_map = render.colorize(render.upsample(amap, image.shape[:2]), colormap, vmin, vmax)
            raw_map = render.colorize(amap, colormap, vmin, vmax)
        if symmetric:  # the image shows through where the unit adds nothing, instead of the colormap's pale middle
            shown_map = render.fade_near_zero(shown_map, render.upsample(amap, image.shape[:2]), vmax)
        tiles.append(
            {
                "index": index,
                "label": None if label is None else probe.classes[label],
                "chosen": index == chosen,
                "peak": float(values.max()),
                "total": float(amap.sum(dtype=np.float64)) if symmetric else None,
                "vmin": vmin,
                "vmax": vmax,
                "image": render.png(image),
                "map": render.png(shown_map),
                "raw": render.png(raw_map),
            }
        )
    return {"tiles": tiles, "vrange": list(shared), "colorbar": render.png(render.colorbar(colormap))}

"""render: activation maps to coloured overlays and PNG bytes, without ipywidgets."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from neuronwidgets import render


def test_to_display_keeps_unit_range_and_scales_the_rest():
    images = np.stack([np.full((1, 4, 4), 0.5), np.linspace(-3, 5, 16).reshape(1, 4, 4)])
    shown = render.to_display(images)
    assert shown.shape == (2, 4, 4, 3) and shown.dtype == np.uint8
    assert (shown[0] == 128).all()
    assert shown[1].min() == 0 and shown[1].max() == 255


def test_overlay_png_is_the_image_size_and_uses_the_colormap():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    amap = np.array([[0.0, 1.0], [0.0, 0.0]])
    data = render.overlay_png(image, amap, "viridis", opacity=1.0)
    picture = np.asarray(Image.open(io.BytesIO(data)))
    assert picture.shape == (16, 16, 3)
    top_right, bottom_left = picture[0, -1], picture[-1, 0]
    assert tuple(bottom_left) == tuple(render.colorize(np.zeros(1), "viridis")[0])
    assert not np.array_equal(top_right, bottom_left)


def test_shared_range_and_colorbar():
    colored = render.colorize(np.array([[5.0]]), "gray", vmin=0, vmax=10)
    assert 120 < colored[0, 0, 0] < 135
    bar = render.colorbar("gray", width=8, height=2)
    assert bar.shape == (2, 8, 3) and bar[0, 0, 0] < bar[0, -1, 0]
    assert render.grid([bar, bar, bar], columns=2).shape == (2 * 2 + 2, 8 * 2 + 2, 3)


def test_unknown_colormap_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        render.colorize(np.zeros((2, 2)), "nope")
    assert "magma" in render.colormap_names()


def test_the_colormap_menu_offers_uniform_maps_first_and_no_reversed_duplicates():
    first, rest = render.offered_colormaps()
    assert first[:2] == ["magma", "viridis"] and "gray" in first
    assert not any(name.endswith("_r") for name in first + rest)
    assert not set(first) & set(rest)
    assert set(first + rest) == {n for n in render.colormap_names() if not n.endswith("_r")}
    assert "magma_r" in render.colormap_names()  # still accepted when set in Python


def test_blend_with_alpha_leaves_clear_pixels_as_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (4, 4, 3), dtype=np.uint8)
    colored = rng.integers(1, 255, (4, 4, 4), dtype=np.uint8)
    colored[..., 3] = 255
    colored[0, 0, 3] = 0
    mixed = render.blend(image, colored, 0.5)
    assert (mixed[0, 0] == image[0, 0]).all()
    assert (mixed[1:, 1:] == render.blend(image, colored[..., :3], 0.5)[1:, 1:]).all()


def test_a_signed_map_fades_to_clear_near_zero():
    values = np.array([[-2.0, -1.0], [0.0, 4.0]])
    colored = render.colorize(values, "RdBu_r", -4.0, 4.0)
    faded = render.fade_near_zero(colored, values, 4.0)
    assert (faded[..., :3] == colored).all()
    assert faded[..., 3].tolist() == [[180, 128], [0, 255]]  # sqrt(|value| / largest), both signs alike
    bordered = np.dstack([colored, np.array([[0, 255], [255, 255]], np.uint8)])
    assert render.fade_near_zero(bordered, values, 4.0)[..., 3].tolist() == [[0, 128], [0, 255]]  # clear stays
    assert (render.fade_near_zero(colored, np.zeros((2, 2)), 0.0)[..., 3] == 0).all()  # an all-zero map: no colour
    image = np.full((2, 2, 3), 50, np.uint8)
    assert (render.blend(image, faded, 1.0)[1, 0] == 50).all()  # zero: the image as it is


def test_core_and_render_never_import_ipywidgets():
    code = "import neuronwidgets, neuronwidgets.render, sys; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

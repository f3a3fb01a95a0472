"""Feature visualisation: an input optimised to excite (or inhibit) one unit, in the manner of Lucid/Lucent.

Plain gradient ascent on pixels gives high-frequency noise that excites a unit without showing anything. What
makes the pictures readable (Olah et al., "Feature Visualization", Distill 2017) is done here:

- the image is parameterised by its Fourier spectrum, scaled by 1/f so that every frequency band is about
  equally easy to change (pixel space favours the highest frequencies);
- its channels are mixed by the square root of the data's channel covariance (for colour images, colour
  decorrelation: steps move along the data's principal colours), a no-op for one channel;
- a sigmoid per channel keeps every pixel inside the data's own range in model space (what the model was fed);
- each step sees the image jittered, scaled and slightly rotated, so the unit must respond to a pattern
  that survives small shifts, not to one pixel-exact arrangement.

The objective is the unit's mean over its map (``"channel"``) or its value at the map's centre (``"neuron"``),
maximised, or minimised with ``negative=True``. Where the layer is a ReLU module (not in-place) that is off
everywhere on the image (no gradient at all), its input is raised instead until it turns on (Lucid's gradient
redirection). Gradients are taken with respect to the image's parameters only (`torch.autograd.grad`): the
model's ``.grad`` and ``requires_grad`` are never touched, it runs in eval mode (`evaluating`) and hooks are on
only during each forward pass. A seed repeats a result bit for bit on the CPU; on a GPU the random draws are the
same, but grid_sample's backward adds with atomics, so results may differ in the last bits.

Cost, measured with `time.perf_counter` on a shared 2-core CPU machine (torch 2.14.1, ``torch.set_num_threads(1)``,
load average 5.1-5.3 from other work) at the default 128 steps: the demo's ``relu2`` (1x32x32 digits) 0.19 s per
unit (mean of 8 units); a random-weight torchvision resnet18's ``layer3`` on 3x64x64 inputs 2.0 s per unit (mean
of 3); the colour shapes demo (``nw.demo.load("shapes")``, 3x32x32) 0.31-0.66 s per unit of ``relu2`` and
0.38-0.48 s of ``relu3`` (means of its 32 units, two runs at load averages 7.5 and 10-11). The digits and resnet18
runs with 2 intra-op threads on those busy cores took 5.1 s and 24 s per unit: one image at a time is small work,
and OpenMP's spinning threads lose to other processes; on a busy machine set one thread. The data's statistics
(range and channel covariance) come from at most 1024 evenly spaced images, read once per probe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuronwidgets.data import as_float_images
from neuronwidgets.display import Display, Unnormalize, rgb, to_uint8
from neuronwidgets.engine.cache import ResultCache
from neuronwidgets.engine.guard import yield_model
from neuronwidgets.engine.hooks import forward_hooks
from neuronwidgets.engine.indices import as_index
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption, check_cancel, check_progress
from neuronwidgets.engine.site import Site

OBJECTIVES = ("channel", "neuron")
DEFAULT_STEPS = 128
LEARNING_RATE = 0.05  # Adam's; with the unitary spectrum scaling below the same rate suits any image size
INIT_SCALE = 0.01  # the initial spectrum: a nearly uniform mid-range image
DECAY = 1.0  # spectrum amplitude ∝ 1/f^DECAY, natural images' falloff
STATS_IMAGES = 1024  # images read for the data's range and channel covariance
JITTER = 1 / 16  # largest shift, as a share of the image side
SCALES = (0.92, 1.08)
DEGREES = 6.0  # largest rotation either way


@dataclass(frozen=True)
class Visualization:
    """One unit's feature visualisation.

    ``input``: (C, H, W) CPU tensor in the model's input space (what the model is fed, normalisation included).
    ``image``: (H, W, 3) uint8 picture of it by the probe's display. ``activation``: the objective's value on
    ``input`` itself (no transform): the unit's mean over its map (``"channel"``) or its centre value
    (``"neuron"``), as the unit gives it, whether it was maximised or minimised (``negative``).
    ``seconds``: time the optimisation took.
    """

    layer: str
    unit: int
    objective: str
    negative: bool
    steps: int
    seed: int
    input: torch.Tensor
    image: np.ndarray
    activation: float
    seconds: float


@dataclass(frozen=True)
class PixelStats:
    """What the parameterisation takes from the data: each channel's valid range in model space, the mixing of
    channels (square root of their covariance in that range, largest column norm 1) and the images' size."""

    low: torch.Tensor  # (C,)
    high: torch.Tensor  # (C,)
    mixing: torch.Tensor  # (C, C)
    size: tuple[int, int]


def pixel_stats(site: Site, display: Display) -> PixelStats:
    """One pass over at most `STATS_IMAGES` evenly spaced images, in chunks of the data's chunk size.

    The range is exact where the display un-normalises (it maps [0, 1] back to model space); otherwise it is
    the data's own minimum and maximum per channel, over those images."""
    n, chunk = len(site.source), site.source.chunk_size
    indices = np.unique(np.linspace(0, n - 1, min(n, STATS_IMAGES)).round().astype(np.int64))
    low = high = None
    total, sums, products = 0, 0.0, 0.0
    size = (0, 0)
    for begin in range(0, len(indices), chunk):
        images = as_float_images(site.source.take(indices[begin : begin + chunk].tolist()).images).double()
        size = (int(images.shape[-2]), int(images.shape[-1]))
        channels = images.transpose(0, 1).reshape(images.shape[1], -1)  # (C, pixels)
        low = channels.amin(1) if low is None else torch.minimum(low, channels.amin(1))
        high = channels.amax(1) if high is None else torch.maximum(high, channels.amax(1))
        total += channels.shape[1]
        sums = sums + channels.sum(1)
        products = products + channels @ channels.T
    assert low is not None and high is not None
    if isinstance(display.convert, Unnormalize):
        count = len(low)
        mean = torch.tensor(display.convert.mean, dtype=torch.float64).expand(count)
        std = torch.tensor(display.convert.std, dtype=torch.float64).expand(count)
        ends = torch.stack([(0 - mean) / std, (1 - mean) / std])  # a negative std swaps the ends
        low, high = ends.amin(0), ends.amax(0)
    mean = sums / total
    covariance = products / total - torch.outer(mean, mean)
    width = torch.where(high > low, high - low, torch.ones_like(high))
    covariance = covariance / torch.outer(width, width)  # in the sigmoid's units: each channel's range is 1
    values, vectors = torch.linalg.eigh(covariance)
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    norm = root.norm(dim=0).max()
    mixing = root / norm if norm > 0 else torch.eye(len(low), dtype=torch.float64)
    return PixelStats(low, high, mixing, size)


class FourierImage:
    """An image (1, C, H, W) in model space from a trainable spectrum: 1/f-scaled inverse FFT per channel, the
    channels mixed by ``stats.mixing``, then a sigmoid into each channel's [low, high]."""

    def __init__(
        self,
        stats: PixelStats,
        size: tuple[int, int],
        generator: torch.Generator,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        h, w = size
        self.size = size
        channels = len(stats.low)
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
        frequency = (fy**2 + fx**2).sqrt()
        # sqrt(h w) makes the inverse FFT (normalised by 1/(h w)) unitary, so the learning rate need not follow
        # the image size; the floor keeps the DC term finite
        self.scale = (frequency.clamp(min=1.0 / max(h, w)) ** -DECAY * math.sqrt(h * w)).to(device, dtype)
        shape = (2, channels, h, w // 2 + 1)
        initial = INIT_SCALE * torch.randn(shape, generator=generator, dtype=torch.float64)  # drawn on the CPU
        self.spectrum = initial.to(device, dtype).requires_grad_(True)
        self.mixing = stats.mixing.to(device, dtype)
        self.low = stats.low.to(device, dtype).view(1, -1, 1, 1)
        self.high = stats.high.to(device, dtype).view(1, -1, 1, 1)

    def __call__(self) -> torch.Tensor:
        h, w = self.size
        spectrum = torch.complex(self.spectrum[0], self.spectrum[1]) * self.scale
        # /4 as Lucid: the initial spectrum then gives pixels of about ±0.01 before the sigmoid
        pixels = torch.fft.irfft2(spectrum, s=(h, w)) / 4
        mixed = torch.einsum("dc,chw->dhw", self.mixing, pixels)
        return self.low + (self.high - self.low) * torch.sigmoid(mixed)[None]


def robust_transform(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``image`` (1, C, H, W) shifted by up to `JITTER` of its side, scaled within `SCALES` and rotated within
    ±`DEGREES`, all drawn from ``generator``."""
    draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    h, w = image.shape[-2:]
    shift = ((2 * draws[0] - 1) * JITTER * w, (2 * draws[1] - 1) * JITTER * h)
    scale = SCALES[0] + (SCALES[1] - SCALES[0]) * draws[2]
    return affine(image, shift, scale, (2 * draws[3] - 1) * DEGREES)


def affine(image: torch.Tensor, shift: tuple[float, float], scale: float, degrees: float) -> torch.Tensor:
    """``image`` (N, C, H, W) rotated by ``degrees`` and scaled by ``scale`` about its centre, then moved by
    ``shift`` = (x, y) pixels; one bilinear resampling, edges reflected, size kept."""
    h, w = image.shape[-2:]
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # the grid maps each output pixel to where it is read from, in units where each side spans 2; the aspect
    # ratio enters the rotation so that a non-square image turns rigidly
    theta = [[cos, -sin * h / w, -2 * shift[0] / w], [sin * w / h, cos, -2 * shift[1] / h]]
    grid = F.affine_grid(torch.tensor([theta], dtype=image.dtype, device=image.device), list(image.shape), False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class _Stop(Exception):
    """Raised once the layer has run: nothing after it is needed."""


# Activations whose gradient is zero where they are off: a unit off everywhere on the starting image would
# never move. Their input, which rises as they turn on, stands in for them while they are (Lucid's redirect).
_RECTIFIERS = (nn.ReLU, nn.ReLU6)


def layer_output(model: nn.Module, module: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``module``'s output with its autograd graph (unlike `engine.capture`, which detaches), and its input where
    ``module`` is a rectifier that keeps its input (not in-place), else None. The rest of the network is
    skipped; the hook is removed on every exit path."""
    captured: list[torch.Tensor | None] = []
    keeps_input = isinstance(module, _RECTIFIERS) and not getattr(module, "inplace", False)

    def grab(mod: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        captured.append(output.clone())  # before an in-place op after the layer could change it
        before = inputs[0] if keeps_input and isinstance(inputs, tuple) and inputs else None
        same = isinstance(before, torch.Tensor) and before.shape == output.shape
        captured.append(before if same else None)
        raise _Stop

    try:
        with forward_hooks([(module, grab)]):
            model(images)
    except _Stop:
        pass
    if not captured:
        raise RuntimeError("the layer did not run during the forward pass")
    output, before = captured
    assert output is not None
    return output, before


def objective_value(output: torch.Tensor, unit: int, objective: str) -> torch.Tensor:
    """The unit's mean over its map (``"channel"``) or its value at the map's centre (``"neuron"``), per image,
    from a layer output (N, units, H, W) or (N, units)."""
    maps = output[:, unit]
    if maps.ndim == 1:
        return maps
    if objective == "neuron":
        return maps[:, maps.shape[1] // 2, maps.shape[2] // 2]
    return maps.flatten(1).mean(1)


def check_options(
    site: Site, unit: Any, objective: Any, negative: Any, steps: Any, size: Any, seed: Any
) -> tuple[int, tuple[int, int] | None]:
    """The options as (unit, size or None), each refused with a clear error before any work starts."""
    unit = as_index(unit, "units", site.units, f"layer {site.layer!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(map(repr, OBJECTIVES))}")
    if not isinstance(negative, (bool, np.bool_)):
        raise TypeError(f"negative must be True or False, got {negative!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an int of at least 1, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if size is not None:
        pair = (size, size) if isinstance(size, (int, np.integer)) else size
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in pair)
        ):
            raise ValueError(f"size must be None (the data's), an int or a pair (height, width) of ints, got {size!r}")
        size = (int(pair[0]), int(pair[1]))
    return unit, size


def visualize(
    site: Site,
    display: Display,
    cache: ResultCache,
    unit: int,
    *,
    objective: str = "channel",
    negative: bool = False,
    steps: int = DEFAULT_STEPS,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Visualization:
    """The input that maximises (``negative``: minimises) ``unit`` of ``site``'s layer; cached in ``cache`` per
    layer, unit and options (dropped when the model changes). See the module's docstring for the method."""
    unit, size = check_options(site, unit, objective, negative, steps, size, seed)
    check_progress(progress)
    check_cancel(cancel)
    stats = cache.get_or_compute(("pixel stats",), lambda: pixel_stats(site, display))
    size = size or stats.size
    key: Hashable = ("visualize", unit, objective, bool(negative), int(steps), size, int(seed), site.layer)
    return cache.get_or_compute(
        key,
        lambda: _optimise(
            site, display, stats, unit, objective, bool(negative), int(steps), size, int(seed), progress, cancel
        ),
    )


def _optimise(
    site: Site,
    display: Display,
    stats: PixelStats,
    unit: int,
    objective: str,
    negative: bool,
    steps: int,
    size: tuple[int, int],
    seed: int,
    progress: ProgressOption,
    cancel: CancelFlag,
) -> Visualization:
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws whatever the model's device
    dtype = torch.float64 if site.dtype == torch.float64 else torch.float32
    image = FourierImage(stats, size, generator, dtype, site.device)
    optimiser = torch.optim.Adam([image.spectrum], lr=LEARNING_RATE)
    sign = 1.0 if negative else -1.0
    with Progress.within(f"visualize {site.layer!r} unit {unit}", steps, progress, cancel) as bar:
        for _ in range(steps):
            seen = robust_transform(image(), generator).to(site.dtype)
            with site.running(grad=True):
                output, before = layer_output(site.model, site.module, seen)
                value = objective_value(output, unit, objective).sum()
                (grad,) = torch.autograd.grad(sign * value, [image.spectrum], retain_graph=before is not None)
                if before is not None and not negative and not grad.any():  # off everywhere: raise its input
                    surrogate = objective_value(before, unit, objective).sum()
                    (grad,) = torch.autograd.grad(sign * surrogate, [image.spectrum])
            image.spectrum.grad = grad
            optimiser.step()
            bar.advance()
            yield_model(site.model)  # a click's overlay waits for a step, not for the whole optimisation
    with torch.no_grad():
        final = image().to(site.dtype)
        with site.running():
            output, _ = layer_output(site.model, site.module, final)
            activation = float(objective_value(output, unit, objective)[0])
    final = final[0].detach().cpu()
    return Visualization(
        layer=site.layer,
        unit=unit,
        objective=objective,
        negative=negative,
        steps=steps,
        seed=seed,
        input=final,
        image=picture(final, display, stats),
        activation=activation,
        seconds=round(time.perf_counter() - start, 4),
    )


def picture(image: torch.Tensor, display: Display, stats: PixelStats) -> np.ndarray:
    """uint8 (H, W, 3) picture of a model input (C, H, W) by ``display``; where the display shows the data's
    own un-normalised images (``raw``) it has no rule for other inputs, so each channel's range in model space
    is mapped onto [0, 1] (for data normalised per channel from [0, 1] images, exactly the un-normalisation)."""
    if display.convert is None and display.raw is not None:
        width = torch.where(stats.high > stats.low, stats.high - stats.low, torch.ones_like(stats.high))
        scaled = (image.double() - stats.low.view(-1, 1, 1)) / width.view(-1, 1, 1)
        return to_uint8(rgb(scaled.numpy())[0])
    return display(image[None])[0]

"""Counting people on any image with a trained model: the notebook API under predict.py.

  counter = Counter.load("workdirs/quickstart")       # a workdir (its best checkpoint)
  counter = Counter.load("model.pth", config=config)  # a published PyTorch checkpoint
  result = counter.count("crowd.jpg")                 # or an RGB numpy array
  result.count, result.density, result.points

Images of any size: an image whose padded size holds at most `max_pixels` pixels is predicted
whole; a larger one is cut into windows of at most `max_pixels` pixels. Each window predicts its
core plus a margin of `margin` pixels on every side that has image beyond it, and only the core's
outputs are kept, so every output cell comes from exactly one window and sees at least `margin`
pixels of real context on each side. Windows are shifted inward at the image's bottom and right
borders, so every window lies inside the image padded exactly as the whole-image run pads it:
all windows share one shape (one compile), and cells at the image border see the same padding as
in a whole-image run. For a model whose receptive field reaches less than `margin` pixels
(UOT's VGG19 regressor: 150 px) the tiled outputs equal the whole-image outputs up to float
rounding; deeper models (HRNet) see slightly less context. Methods with an image-level step
(AutoScale's and L2SM's re-prediction of the densest region, DKPNet's attention pooled over the
image) treat each window as an image, so their tiled counts are close to, not equal to, their
whole-image counts.

Memory: a forward pass's activations grow with its pixels; `max_pixels` bounds them (the
default, 2^21 pixels, keeps a full-width VGG19 forward near 2.2 GB on a CPU; see README for
measured peaks). The image itself is held once as uint8 and once normalised (12 bytes/pixel);
`max_image_pixels` bounds it, as read from a file's header and as scaled up by
`data.min_short_side` (a 100000 x 10 strip would become 5120000 x 512), so a hostile or odd
image is refused with a message instead of exhausting the host's memory.

Trust: a workdir's `config.json` names its method; only a registered method
(`crowdjax.registry`) is loaded from it, since a "module:ATTR" name imports that module, which
could be a file shipped with a downloaded workdir. Name such a method yourself to load it
(`trusted_method`; predict.py's `--trust_method`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crowdjax import checkpointing, media, run, storage
from crowdjax import metrics as metrics_lib
from crowdjax.data import transforms
from crowdjax.workdir import load_config

DEFAULT_MAX_PIXELS = 2**21  # 1448 x 1448: see the module doc and the README for its memory.
DEFAULT_MARGIN = 192  # > the 150 px receptive-field radius of UOT's VGG19 regressor.


@dataclasses.dataclass
class Prediction:
    """What a model says about one image.

    Attributes:
      count: predicted number of people (density methods: the density's sum over the image;
        localization methods: the number of points).
      density: [ceil(H' / s), ceil(W' / s)] people per output cell at stride s (`stride`), over
        the image as predicted (H' x W' = `shape` times `scale`); None for localization methods.
      points: [N, 2] (x, y) head locations in the input image's pixels (localization methods;
        None for density methods).
      stride: output stride s of `density`, in pixels of the predicted image.
      shape: (H, W) of the input image.
      scale: how much the image was scaled up before predicting (`data.min_short_side`), else 1.
      windows: forward passes used (1: whole image).
      spread, interval, disagree, variant_counts: with test-time variants or an ensemble
        (`crowdjax.tta`): the variant counts' standard deviation, their (min, max), whether
        they disagree by more than the threshold, and the counts themselves; else None.
      zones: {zone name: {"count", "per_m2"?}} when counted per zone (`crowdjax.zones`).
    """

    count: float
    density: np.ndarray | None
    points: np.ndarray | None
    stride: int
    shape: tuple[int, int]
    scale: float = 1.0
    windows: int = 1
    spread: float | None = None
    interval: tuple[float, float] | None = None
    disagree: bool | None = None
    variant_counts: np.ndarray | None = None
    zones: dict | None = None

    def record(self) -> dict:
        """The JSON-ready summary: count, shape, windows, the points (if any), and the
        interval fields and zones when present."""
        out = {"count": float(self.count), "height": self.shape[0], "width": self.shape[1]}
        out["windows"] = self.windows
        if self.interval is not None:
            out["spread"] = float(self.spread)
            out["interval"] = [float(self.interval[0]), float(self.interval[1])]
            out["disagree"] = bool(self.disagree)
            out["variants"] = [round(float(c), 4) for c in self.variant_counts]
        if self.zones is not None:
            out["zones"] = self.zones
        if self.points is not None:
            out["points"] = np.round(self.points, 2).tolist()
        return out


def find_config(checkpoint: str, *, trusted_method: str | None = None) -> ml_collections.ConfigDict:
    """The run config next to a checkpoint: `config.json` of the workdir, or of the workdir above
    its `best/`, `checkpoints/` or one step directory.

    Args:
      checkpoint: the checkpoint path.
      trusted_method: a "module:ATTR" method the caller names to replace the config's (see
        `workdir.load_config`); without it only a registered method is accepted.

    Raises:
      FileNotFoundError: no config.json in those places (pass a config file instead).
      ValueError: the config names a method that is not registered.
    """
    path = storage.absolute(checkpoint).rstrip("/")
    for _ in range(3):
        if storage.isfile(os.path.join(path, "config.json")):
            return load_config(path, trusted_method=trusted_method)
        path = os.path.dirname(path)
    raise FileNotFoundError(
        f"{checkpoint}: no config.json in it or the two folders above it; pass the config the "
        "model was trained with (--config=configs/<file>.py)"
    )


@dataclasses.dataclass(frozen=True)
class Window:
    """One forward pass of a tiled image: input rows [y, y + h) and columns [x, x + w) of the
    padded image; it keeps the outputs of its core [cy0, cy1) x [cx0, cx1) (padded-image pixels,
    multiples of the stride)."""

    y: int
    x: int
    core: tuple[int, int, int, int]  # (cy0, cy1, cx0, cx1)


def window_plan(
    padded: tuple[int, int], window: tuple[int, int], core: tuple[int, int], margin: int
) -> list[Window]:
    """Windows of shape `window` whose cores of at most `core` tile the padded image exactly.

    Cores start on a grid of step `core`; a window starts `margin` above and left of its core,
    clamped into [0, padded - window], so it always covers its core plus `margin` (or the image
    border) on each side when window >= core + 2 * margin.
    """
    out = []
    for cy0 in range(0, padded[0], core[0]):
        for cx0 in range(0, padded[1], core[1]):
            cy1, cx1 = min(cy0 + core[0], padded[0]), min(cx0 + core[1], padded[1])
            y = min(max(cy0 - margin, 0), padded[0] - window[0])
            x = min(max(cx0 - margin, 0), padded[1] - window[1])
            out.append(Window(y=y, x=x, core=(cy0, cy1, cx0, cx1)))
    return out


class Counter:
    """A trained model, loaded once, that counts people on images (see the module doc).

    Args:
      config: the run's config (method, model, data settings).
      variables: {"params", **model_state} of the model.
      max_pixels: the most pixels one forward pass sees (the memory bound).
      margin: context (px) each window keeps around its core.
      max_image_pixels: the most pixels of an image, as read and as scaled up by
        `data.min_short_side` (`media.PixelLimitError` above).
      setup: the config's `run.Setup` on one device, if already built.
    """

    def __init__(
        self,
        config,
        variables,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        margin: int = DEFAULT_MARGIN,
        max_image_pixels: int = media.DEFAULT_MAX_IMAGE_PIXELS,
        setup: run.Setup | None = None,
    ):
        self.config = config
        self.setup = setup or run.Setup(config, devices=jax.devices()[:1])
        self.method = self.setup.method
        self.stride = int(self.setup.output_stride)
        # Padded sizes: multiples of the evaluation pipeline's and of the stride.
        self.multiple = math.lcm(int(config.data.eval_bucket_multiple), self.stride)
        self.margin = -(-int(margin) // self.multiple) * self.multiple
        if max_pixels < (self.multiple + 2 * self.margin) ** 2:
            raise ValueError(
                f"max_pixels={max_pixels} cannot hold a window of one {self.multiple} px core "
                f"with a {self.margin} px margin; raise it or lower the margin"
            )
        self.max_pixels = int(max_pixels)
        self.max_image_pixels = int(max_image_pixels)
        self.min_short_side = int(config.data.min_short_side)
        self.variables = variables
        self._predict = jax.jit(
            functools.partial(
                run._predict, method=self.method, model=self.setup.model, config=config
            )
        )

    @classmethod
    def load(
        cls,
        checkpoint: str,
        *,
        config=None,
        prefer: str = "best",
        trusted_method: str | None = None,
        **kwargs,
    ) -> Counter:
        """Loads a model: `checkpoint` is a workdir (its best checkpoint, else its latest), its
        `best/` or `checkpoints/`, one step directory, or a published PyTorch file (then
        `config` is required). `config` defaults to the run's `config.json`, whose method must
        be registered unless `trusted_method` names the "module:ATTR" to load (module doc)."""
        if config is None:
            config = find_config(checkpoint, trusted_method=trusted_method)
        setup = run.Setup(config, devices=jax.devices()[:1])
        abstract = setup.abstract_variables()
        if storage.isfile(checkpoint):
            variables, info = checkpointing.restore_variables(
                checkpoint, abstract, prefer=prefer, config=config
            )
        else:
            variables, info = checkpointing.restore_variables(checkpoint, abstract, prefer=prefer)
        counter = cls(config, variables, setup=setup, **kwargs)
        counter.checkpoint_info = info
        return counter

    # ------------------------------------------------------------------------------------------

    def count(self, image, *, name: str | None = None) -> Prediction:
        """Predicts one image: a path or a numpy RGB image (see `media.as_rgb`)."""
        if isinstance(image, str | os.PathLike):
            name = name or media.printable(os.fspath(image))
            rgb = media.read_image(os.fspath(image), max_pixels=self.max_image_pixels)
        else:
            name = name or "<array>"
            rgb = media.as_rgb(image, name=name)
        return self.count_rgb(rgb, name=name)

    def count_rgb(self, rgb: np.ndarray, *, name: str = "<array>") -> Prediction:
        """Predicts one RGB uint8 [H, W, 3] image (`name`: for error messages).

        Raises:
          media.PixelLimitError: the image, scaled up to `data.min_short_side`, holds more than
            `max_image_pixels` pixels.
        """
        import cv2

        shape = rgb.shape[:2]
        h, w = transforms.min_side_shape(*shape, self.min_short_side)
        if (h, w) != shape:
            what = f"{shape[0]} x {shape[1]} image scaled up by data.min_short_side to an image"
        else:
            what = "image"
        media.check_pixels((h, w), self.max_image_pixels, name=name, what=what)
        scale = h / shape[0]
        if (h, w) != shape:
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        padded = tuple(-(-s // self.multiple) * self.multiple for s in (h, w))
        image = transforms.normalize(rgb)
        del rgb
        if padded[0] * padded[1] <= self.max_pixels:
            outputs = self._forward(image, (0, 0), padded)
            density, points, windows = self._finish(outputs, (h, w)), None, 1
            if self.method.points_fn is not None:
                points = self._points(outputs, (h, w))
        else:
            density, points, windows = self._tiled(image, padded)
        if points is not None:
            points = points / np.float32(scale)
            count = float(len(points))
        else:
            count = self._density_count(density, (h, w))
        return Prediction(
            count=count,
            density=density,
            points=points,
            stride=self.stride,
            shape=shape,
            scale=scale,
            windows=windows,
        )

    # ------------------------------------------------------------------------------------------

    def _forward(self, image: np.ndarray, at: tuple[int, int], size: tuple[int, int]) -> dict:
        """The method's outputs (numpy, batch axis removed) for the padded image's window of
        `size` at `at` (rows and columns beyond the real image are padding)."""
        y, x = at
        real = image[y : y + size[0], x : x + size[1]]
        crop = transforms.pad_to(real, *size)
        mask = transforms.image_mask(*size, *real.shape[:2])
        out = self._predict(self.variables, jnp.asarray(crop[None]), jnp.asarray(mask[None]))
        return {k: np.asarray(v)[0] for k, v in jax.device_get(out).items()}

    def _finish(self, outputs: dict, real: tuple[int, int]) -> np.ndarray | None:
        if "density" not in outputs:
            return None
        cells = tuple(-(-s // self.stride) for s in real)
        return np.asarray(outputs["density"][: cells[0], : cells[1]], np.float32)

    def _points(self, outputs: dict, real: tuple[int, int]) -> np.ndarray:
        points = self.method.points_fn(outputs, real, self.config)
        return np.asarray(points, np.float32).reshape(-1, 2)

    def _density_count(self, density: np.ndarray, real: tuple[int, int]) -> float:
        # As the evaluator counts: border cells weighted by their share of real pixels.
        pred, _ = metrics_lib.game_cell_counts(
            density, np.zeros((0, 2)), level=0, stride=self.stride, roi=np.ones(real, np.uint8)
        )
        return float(pred.sum())

    def _tiled(self, image: np.ndarray, padded: tuple[int, int]):
        h, w = image.shape[:2]
        window, core = self._window_shape(padded)
        plan = window_plan(padded, window, core, self.margin)
        s = self.stride
        stitched: dict[str, np.ndarray] = {}
        points = []
        for win in plan:
            outputs = self._forward(image, (win.y, win.x), window)
            cy0, cy1, cx0, cx1 = win.core
            spatial = {
                k: v
                for k, v in outputs.items()
                if v.ndim >= 2 and v.shape[:2] == (window[0] // s, window[1] // s)
            }
            for key, value in spatial.items():
                if key not in stitched:
                    shape = (padded[0] // s, padded[1] // s) + value.shape[2:]
                    stitched[key] = np.zeros(shape, value.dtype)
                stitched[key][cy0 // s : cy1 // s, cx0 // s : cx1 // s] = value[
                    (cy0 - win.y) // s : (cy1 - win.y) // s, (cx0 - win.x) // s : (cx1 - win.x) // s
                ]
            if self.method.points_fn is not None and len(spatial) < len(outputs):
                # Outputs that are not maps (e.g. a region box): heads per window, kept in its core.
                real = (min(window[0], h - win.y), min(window[1], w - win.x))
                found = self._points(outputs, real) + np.float32((win.x, win.y))
                inside = (
                    (found[:, 0] >= cx0)
                    & (found[:, 0] < cx1)
                    & (found[:, 1] >= cy0)
                    & (found[:, 1] < cy1)
                )
                points.append(found[inside])
        density = self._finish(stitched, (h, w))
        if self.method.points_fn is None:
            return density, None, len(plan)
        if points:
            return density, np.concatenate(points, 0), len(plan)
        return density, self._points(stitched, (h, w)), len(plan)

    def _window_shape(self, padded) -> tuple[tuple[int, int], tuple[int, int]]:
        """(window, core) sizes: the largest square-ish window within `max_pixels`, no larger
        than the padded image, whose core is the window less a margin on each side."""
        m, margin = self.multiple, self.margin
        side = int(math.isqrt(self.max_pixels)) // m * m
        window = [min(side, p) for p in padded]
        # A side that fits whole lends its unused pixels to the other one.
        for i in (0, 1):
            if window[1 - i] == padded[1 - i]:
                window[i] = min(padded[i], self.max_pixels // window[1 - i] // m * m)
        core = tuple(
            p if win == p else win - 2 * margin for win, p in zip(window, padded, strict=True)
        )
        return tuple(window), core

"""A count with an interval: test-time variants and checkpoint ensembles in one jitted call.

  counter = TTACounter.load(["workdirs/a", "workdirs/b"], variants=Variants.parse(
      "flip,scales=0.8,1.0,1.25"))
  result = counter.count("crowd.jpg")
  result.count, result.spread, result.interval, result.disagree, result.variant_counts

Variants (`--tta=flip,scales=0.8,1.0,1.25`): the image at each scale, and mirrored left-right with
`flip`. One jitted function predicts them all: for each scale the image (padded as
`crowdjax.prediction` pads it) is resized inside the jit (bilinear, antialiased) to the nearest
multiple of the model's padding multiple, the flipped copy rides on the batch axis of the same
forward pass, and each variant's density is mapped back onto the unscaled image's density grid
by an area-weighted resampling (`resample_matrix`: each scaled cell's people are shared among the
cells it overlaps in proportion to the overlap, so every variant keeps its count exactly up to
float rounding). Several checkpoints of one architecture (an ensemble) are stacked and the whole
function is `vmap`ped over them. The result per input:
  count     the mean of the variant counts (`variant_counts`, ordered by checkpoint, then
            scale, then the image before its mirror image);
  spread    their standard deviation (population, ddof 0);
  interval  count +- k x spread (k = `interval_k`, 2 by default), the low end floored at 0.
            Not the (min, max) of the variants: the range of two variants (a flip) is only
            +- 1 spread, and a range widens with the number of variants, while +- k x spread
            means the same for any number of them; on the quickstart's validation images
            +- 2 spread also held the truth 1.5-2.6x as often as (min, max) (README). It is a
            spread of the model's answers, not a calibrated confidence interval: how often it
            holds the truth is measured, not promised (`python -m crowdjax.tta_eval`);
  disagree  spread / max(count, 1) > the threshold (`--disagreement`, 0.1 by default): a
            relative spread, floored at one person so that near-empty images do not all flag.

Large images: `crowdjax.prediction`'s windows are kept, and every variant runs per window (the
window's variants in one call, each mapped back onto that window's grid and stitched as the
plain prediction stitches), so variant v of a tiled image is the tiled prediction of the image
under variant v. The variants of one window are in memory together, so a window holds
`max_pixels / (largest scale^2 x 2 (flip) x checkpoints)` pixels: the same memory bound as a
plain run. Localization methods (heads, not a density) are refused: their variants' heads cannot
be averaged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from crowdjax import checkpointing, media, prediction, run
from crowdjax.metric_writers import log

DEFAULT_DISAGREEMENT = 0.1
DEFAULT_INTERVAL_K = 2.0


@dataclasses.dataclass(frozen=True)
class Variants:
    """The test-time variants of each checkpoint: every scale, each also flipped if `flip`."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def parse(cls, text: str) -> Variants:
        """'flip,scales=0.8,1.0,1.25' (either part optional; '' gives the image alone).

        Raises:
          ValueError: an unknown word, a scale that is not a positive number, or one given twice.
        """
        flip, scales, current = False, [], None
        for word in [w.strip() for w in (text or "").split(",") if w.strip()]:
            if word == "flip":
                flip, current = True, None
            elif word.startswith("scales="):
                current = scales
                word = word[len("scales=") :]
                scales.append(_scale(word, text))
            elif current is not None:
                scales.append(_scale(word, text))
            else:
                raise ValueError(f"--tta={text!r}: unknown variant {word!r} (flip, scales=...)")
        if len(set(scales)) < len(scales):
            raise ValueError(f"--tta={text!r}: a scale is given twice")
        return cls(flip=flip, scales=tuple(scales) or (1.0,))

    @property
    def per_model(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def _scale(word: str, text: str) -> float:
    try:
        value = float(word)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--tta={text!r}: a scale must be a positive number, got {word!r}")
    return value


def scaled_size(size: int, scale: float, multiple: int) -> int:
    """`size` x `scale` rounded to a multiple of `multiple` (at least one)."""
    return max(multiple, round(size * scale / multiple) * multiple)


def resample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] area weights from a grid of n_in cells to one of n_out cells over the same
    extent: entry (i, k) is the share of input cell k that lies in output cell i, so every
    column sums to 1 and `m @ x` keeps the sum of `x`."""
    edges_in = np.arange(n_in + 1) / n_in
    edges_out = np.arange(n_out + 1) / n_out
    low = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    high = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return (np.maximum(high - low, 0.0) * n_in).astype(np.float32)


def map_back(density: jax.Array, cells: tuple[int, int]) -> jax.Array:
    """[B, h', w'] densities of a scaled image -> [B, *cells] on the unscaled grid, each
    variant's total kept (see `resample_matrix`)."""
    rows = jnp.asarray(resample_matrix(cells[0], density.shape[1]))
    cols = jnp.asarray(resample_matrix(cells[1], density.shape[2]))
    return jnp.einsum("ik,bkl,jl->bij", rows, density, cols, precision="highest")


def variant_densities(
    variables, images, image_mask, *, predict, variants: Variants, stride, multiple
):
    """Every variant's density of one padded image, for one checkpoint's variables.

    Args:
      variables: one checkpoint's {"params", ...}.
      images: [1, H, W, 3] normalised, H and W multiples of `multiple`.
      image_mask: [1, H, W] real pixels.
      predict: (variables, images, image_mask) -> {"density": [B, H / s, W / s], ...}.
      variants: the scales and flip.
      stride, multiple: the output stride and the padding multiple of the model.

    Returns:
      [V, H / s, W / s]: per scale, the image then its flipped copy (if `flip`).
    """
    _, h, w, _ = images.shape
    cells = (h // stride, w // stride)
    out = []
    for scale in variants.scales:  # Traced once: the scales are static shapes of one program.
        size = (scaled_size(h, scale, multiple), scaled_size(w, scale, multiple))
        image, mask = images, image_mask
        if size != (h, w):
            image = jax.image.resize(images, (1, *size, 3), "linear", antialias=True)
            mask = jax.image.resize(image_mask.astype(jnp.float32), (1, *size), "nearest")
            mask = mask.astype(image_mask.dtype)
        if variants.flip:  # The mirrored copy on the batch axis of the same forward pass.
            image = jnp.concatenate([image, image[:, :, ::-1]], 0)
            mask = jnp.concatenate([mask, mask[:, :, ::-1]], 0)
        density = predict(variables, image, mask)["density"]
        if variants.flip:
            density = jnp.concatenate([density[:1], density[1:, :, ::-1]], 0)
        out.append(map_back(density.astype(jnp.float32), cells))
    return jnp.concatenate(out, 0)


def ensemble_densities(stacked, images, image_mask, **kwargs):
    """`variant_densities` of every checkpoint (`vmap` over the stacked variables), as one
    output {"density": [1, H / s, W / s, models x variants]} (variants last, so that tiled
    images stitch them as one map)."""
    per_model = jax.vmap(lambda v: variant_densities(v, images, image_mask, **kwargs))(stacked)
    m, v, h, w = per_model.shape
    return {"density": jnp.moveaxis(per_model.reshape(m * v, h, w), 0, -1)[None]}


@dataclasses.dataclass(frozen=True)
class Summary:
    """The statistics of one input's variant counts (module doc)."""

    count: float
    spread: float
    interval: tuple[float, float]
    disagree: bool


def summarize(
    counts, *, disagreement: float = DEFAULT_DISAGREEMENT, interval_k: float = DEFAULT_INTERVAL_K
) -> Summary:
    """Mean, spread, mean +- k spread interval (floored at 0) and the disagreement flag of
    variant counts (module doc)."""
    counts = np.asarray(counts, np.float64)
    mean, spread = float(counts.mean()), float(counts.std())
    return Summary(
        count=mean,
        spread=spread,
        interval=(max(mean - interval_k * spread, 0.0), mean + interval_k * spread),
        disagree=bool(spread / max(abs(mean), 1.0) > disagreement),
    )


class TTACounter(prediction.Counter):
    """A `prediction.Counter` whose predictions carry the variants' spread (module doc).

    Args:
      config: the run's config (of every checkpoint: one architecture).
      variables: one {"params", **model_state} per checkpoint.
      variants: the test-time variants.
      disagreement: relative spread above which a prediction is flagged.
      interval_k: the interval is the count +- `interval_k` spreads.
      max_pixels: the memory bound of one window's variants together (module doc).
      **kwargs: the other options of `prediction.Counter`.
    """

    def __init__(
        self,
        config,
        variables: list[dict],
        *,
        variants: Variants = Variants(),
        disagreement: float = DEFAULT_DISAGREEMENT,
        interval_k: float = DEFAULT_INTERVAL_K,
        max_pixels: int = prediction.DEFAULT_MAX_PIXELS,
        **kwargs,
    ):
        copies = max(variants.scales) ** 2 * (2 if variants.flip else 1) * len(variables)
        try:
            super().__init__(config, variables[0], max_pixels=int(max_pixels / copies), **kwargs)
        except ValueError as e:
            raise ValueError(
                f"max_pixels={max_pixels} shared by {len(variables)} checkpoint(s) x the largest "
                f"scale^2 {max(variants.scales) ** 2:g} x {2 if variants.flip else 1} (flip) "
                f"leaves too few pixels per window: {e}"
            ) from e
        if self.method.points_fn is not None:
            raise ValueError(
                f"--tta and ensembles need a density method; {config.method} predicts heads"
            )
        self.variants, self.disagreement, self.models = variants, disagreement, len(variables)
        self.interval_k = float(interval_k)
        self.variables = jax.tree.map(lambda *v: jnp.stack(v), *variables)
        predict = functools.partial(
            run._predict, method=self.method, model=self.setup.model, config=config
        )
        self._predict = jax.jit(
            functools.partial(
                ensemble_densities,
                predict=predict,
                variants=variants,
                stride=self.stride,
                multiple=self.multiple,
            )
        )

    @classmethod
    def load(
        cls,
        checkpoints,
        *,
        config=None,
        prefer: str = "best",
        trusted_method: str | None = None,
        **kwargs,
    ) -> TTACounter:
        """Loads one or more checkpoints of one architecture (each as `prediction.Counter.load`
        takes it; `config` defaults to the first one's run config).

        Raises:
          ValueError: a checkpoint's run config names another method or model than the first's,
            or its weights do not fit the first's architecture (naming it).
        """
        checkpoints = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints)
        if config is None:
            config = prediction.find_config(checkpoints[0], trusted_method=trusted_method)
        setup = run.Setup(config, devices=jax.devices()[:1])
        abstract = setup.abstract_variables()
        variables, infos = [], []
        for checkpoint in checkpoints:
            _check_same_model(checkpoint, checkpoints[0], config, trusted_method)
            extra = {"config": config} if os.path.isfile(checkpoint) else {}
            try:
                restored, info = checkpointing.restore_variables(
                    checkpoint, abstract, prefer=prefer, **extra
                )
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{checkpoint}: its weights do not fit the model of {checkpoints[0]} "
                    f"(an ensemble needs one architecture): {str(e)[:300]}"
                ) from e
            variables.append(restored)
            infos.append(info)
        counter = cls(config, variables, setup=setup, **kwargs)
        counter.checkpoint_info, counter.checkpoint_infos = infos[0], infos
        return counter

    def _density_count(self, density: np.ndarray, real: tuple[int, int]) -> float:
        return float(density.astype(np.float64).sum(axis=(0, 1)).mean())

    def count_rgb(self, rgb: np.ndarray, *, name: str = "<array>") -> prediction.Prediction:
        """Predicts one RGB uint8 [H, W, 3] image under every variant (module doc)."""
        result = super().count_rgb(rgb, name=name)
        counts = result.density.astype(np.float64).sum(axis=(0, 1))
        summary = summarize(counts, disagreement=self.disagreement, interval_k=self.interval_k)
        return dataclasses.replace(
            result,
            count=summary.count,
            density=result.density.mean(-1),
            spread=summary.spread,
            interval=summary.interval,
            disagree=summary.disagree,
            variant_counts=counts,
        )


def load_counter(
    checkpoints,
    *,
    variants: Variants | None = None,
    disagreement: float = DEFAULT_DISAGREEMENT,
    interval_k: float = DEFAULT_INTERVAL_K,
    **options,
) -> prediction.Counter:
    """The counter of predict.py and the web page: a plain `prediction.Counter` for one
    checkpoint without test-time variants, else a `TTACounter` of every checkpoint (`options`:
    those of `prediction.Counter.load`). Logs which model it loaded, from where."""
    checkpoints = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints)
    if variants is None and len(checkpoints) == 1:
        counter = prediction.Counter.load(checkpoints[0], **options)
    else:
        counter = TTACounter.load(
            checkpoints,
            variants=variants or Variants(),
            disagreement=disagreement,
            interval_k=interval_k,
            **options,
        )
    info = counter.checkpoint_info
    source = f"{media.printable(info['path'])} ({info['kind']} step {info['step']})"
    log(f"model {counter.config.method} from {source}")
    return counter


def _check_same_model(checkpoint: str, first: str, config, trusted_method) -> None:
    if checkpoint == first or os.path.isfile(checkpoint):
        return
    try:
        other = prediction.find_config(checkpoint, trusted_method=trusted_method)
    except FileNotFoundError:
        return  # No run config beside it: the restore checks the shapes.
    for key in ("method", "model"):
        mine, theirs = config.get(key), other.get(key)
        if hasattr(mine, "to_dict"):
            mine, theirs = mine.to_dict(), theirs.to_dict() if theirs is not None else None
        if mine != theirs:
            raise ValueError(
                f"{checkpoint}: its config's {key} differs from {first}'s; an ensemble needs "
                f"one architecture ({mine} vs {theirs})"
            )

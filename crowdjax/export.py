"""A trained model as files that run without crowdjax: a `jax.export` artifact and its manifest.

  python -m crowdjax.export --checkpoint=workdirs/quickstart --output=exported
  python -m crowdjax.export --config=configs/uot_shb.py --checkpoint=best_model.pth --output=exp

Writes to `--output`:
  model.jax_exported  the prediction function, weights included, serialized by `jax.export`
                      (StableHLO): `jax.export.deserialize(bytes).call(images)` in any JAX
                      install (examples/run_exported.py), on the platforms of `--platforms`
  manifest.json       how to feed it and read it: method, input convention, output stride,
                      padding multiple, the count's units, versions, the run's config
  saved_model/, model.tflite, model.onnx
                      with `--formats=stablehlo,savedmodel,tflite,onnx` and the export extra
                      (`pip install "crowdjax[export]"`; see `crowdjax.export_tf`); TFLite and
                      ONNX take one image size, `--image_size=HEIGHT,WIDTH`

The exported function takes float32 [B, H, W, 3] RGB images in [0, 255] (NHWC; any B, H and W,
one size per batch) and returns {"density": [B, ceil(H / s), ceil(W / s)], "count": [B]}: it
normalises as crowdjax does (ImageNet mean and std), pads each image at the bottom and right to
the model's multiple (zeros after normalisation, with the real-pixel mask the methods use),
predicts, and crops the density to the cells that hold real pixels. `count` is the density's sum,
as `crowdjax.prediction.Counter` counts a whole image (a border cell holds the people of its
real pixels only). The weights are constants of the module: one file to ship, nothing to match.

What stays outside the file, as predict.py does it on the host: scaling an image up to the
config's `data.min_short_side` (the manifest's `min_short_side`; examples/run_exported.py does it
with OpenCV as crowdjax does), and cutting images of more than `max_pixels` into windows (the
exported function predicts the whole image at once; its memory grows with the pixels). Methods
whose heads are found on the host (localization, `points_fn`) are refused: their count is not a
function of the device outputs alone.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from crowdjax import cli, console, export_tf, media, prediction, run, storage
from crowdjax.data import transforms
from crowdjax.metric_writers import log

STABLEHLO_FILE = "model.jax_exported"
MANIFEST_FILE = "manifest.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("stablehlo", "savedmodel", "tflite", "onnx")
TF_FORMATS = ("savedmodel", "tflite", "onnx")  # Through TensorFlow: `crowdjax.export_tf`.


def prediction_function(counter: prediction.Counter) -> Callable[[jax.Array], dict]:
    """The exported computation of a loaded model: images -> {"density", "count"} (module doc).

    Raises:
      ValueError: the method finds heads on the host (`points_fn`), which no export can hold.
    """
    if counter.method.points_fn is not None:
        raise ValueError(
            f"method {counter.config.method!r} finds its heads on the host (points_fn), so its "
            "count is not a function of the model's outputs alone; export supports density "
            "methods (UOT, AutoScale and L2SM regression, DKPNet, ASNet)"
        )
    multiple, stride = counter.multiple, counter.stride
    # As `transforms.normalize`: x * scale + offset, the same float32 constants.
    mean, std = np.asarray(transforms.IMAGENET_MEAN), np.asarray(transforms.IMAGENET_STD)
    scale = jnp.asarray((1.0 / (255.0 * std)).astype(np.float32))
    offset = jnp.asarray((-mean / std).astype(np.float32))

    def predict_images(images: jax.Array) -> dict:
        batch, height, width, _ = images.shape
        padded_h = (height + multiple - 1) // multiple * multiple
        padded_w = (width + multiple - 1) // multiple * multiple
        x = images.astype(jnp.float32) * scale + offset
        x = jnp.pad(x, ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0)))
        mask = (jnp.arange(padded_h)[:, None] < height) & (jnp.arange(padded_w)[None, :] < width)
        mask = jnp.broadcast_to(mask, (batch, padded_h, padded_w))
        out = run._predict(  # The jitted function `Counter` runs, with the same arguments.
            counter.variables,
            x,
            mask,
            method=counter.method,
            model=counter.setup.model,
            config=counter.config,
        )
        cells_h, cells_w = (height + stride - 1) // stride, (width + stride - 1) // stride
        density = out["density"][:, :cells_h, :cells_w].astype(jnp.float32)
        return {"density": density, "count": density.sum(axis=(1, 2))}

    return predict_images


def export_stablehlo(
    counter: prediction.Counter,
    *,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    image_size: tuple[int, int] | None = None,
) -> jax.export.Exported:
    """`jax.export` of `prediction_function` with a symbolic batch and a symbolic height and
    width, or the fixed `image_size` (H, W).

    Raises:
      ValueError: the method's prediction needs concrete sizes (AutoScale's and L2SM's
        re-prediction of a region whose size follows the image's): export it for one
        `image_size`.
    """
    sizes = "height, width" if image_size is None else ", ".join(map(str, image_size))
    images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"batch, {sizes}, 3"), jnp.float32)
    function = jax.jit(prediction_function(counter))
    try:
        return jax.export.export(function, platforms=tuple(platforms))(images)
    except (
        jax.errors.InconclusiveDimensionOperation,
        jax.errors.ConcretizationTypeError,
        NotImplementedError,
    ) as error:
        if image_size is not None:
            raise
        raise ValueError(
            f"method {counter.config.method!r} cannot be exported for any image size (its "
            f"prediction needs concrete sizes: {str(error).splitlines()[0]}); export it for one "
            "size with --image_size=HEIGHT,WIDTH"
        ) from error


def crowdjax_version() -> str:
    try:
        return importlib.metadata.version("crowdjax")
    except importlib.metadata.PackageNotFoundError:  # A source checkout that was not installed.
        return "unknown (not installed)"


def manifest(
    counter: prediction.Counter,
    *,
    files: dict,
    platforms: Sequence[str],
    image_size: tuple[int, int] | None = None,
) -> dict:
    """The manifest.json record: what a user of the files needs to feed them (module doc)."""
    info = getattr(counter, "checkpoint_info", {}) or {}
    sizes = ["height", "width"] if image_size is None else list(image_size)
    return {
        "method": str(counter.config.method),
        "files": files,
        "platforms": list(platforms),
        "input": {
            "name": "images",
            "shape": ["batch", *sizes, 3],
            "shape_tflite_onnx": [1, *sizes, 3],
            "layout": "NHWC",
            "dtype": "float32",
            "channels": "RGB",
            "value_range": [0, 255],
            "normalisation": "inside the model: (x / 255 - mean) / std per channel",
            "mean": list(transforms.IMAGENET_MEAN),
            "std": list(transforms.IMAGENET_STD),
            "note": "one image size per batch; padding to padding_multiple is inside the model",
        },
        "outputs": {
            "density": {
                "shape": ["batch", "ceil(height / output_stride)", "ceil(width / output_stride)"],
                "units": "people per output cell; the sum over the cells is the count",
            },
            "count": {"shape": ["batch"], "units": "people (the density's sum)"},
        },
        "output_stride": counter.stride,
        "padding_multiple": counter.multiple,
        "min_short_side": counter.min_short_side,
        "min_short_side_note": (
            "crowdjax scales an image whose short side is below this up to it (aspect kept, "
            "bilinear, sides rounded) before predicting; 0: never"
        ),
        "crowdjax_version": crowdjax_version(),
        "jax_version": jax.__version__,
        "checkpoint": {k: info[k] for k in ("path", "kind", "step") if k in info},
        "config": json.loads(counter.config.to_json_best_effort()),
    }


def write(
    counter: prediction.Counter,
    output: str,
    *,
    formats: Sequence[str] = ("stablehlo",),
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    image_size: tuple[int, int] | None = None,
) -> dict:
    """Writes the exported files and manifest.json to `output`; returns the manifest.

    Args:
      counter: the loaded model (`prediction.Counter.load`).
      output: the folder (created).
      formats: of `FORMATS`; the TensorFlow ones need the export extra.
      platforms: those the StableHLO artifact is lowered for.
      image_size: (H, W) for a fixed-size export (required by TFLite and ONNX); None: any.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(f"image_size must be (HEIGHT, WIDTH) >= 1, got {tuple(image_size)}")
    if any(f in TF_FORMATS for f in formats):
        export_tf.require()  # A missing extra fails before anything is written.
    storage.makedirs(output)
    files = {}
    if "stablehlo" in formats:
        exported = export_stablehlo(counter, platforms=platforms, image_size=image_size)
        storage.write_atomic(os.path.join(output, STABLEHLO_FILE), bytes(exported.serialize()))
        files["stablehlo"] = STABLEHLO_FILE
    if any(f in TF_FORMATS for f in formats):
        function = prediction_function(counter)
        files.update(export_tf.write(function, output, formats=formats, image_size=image_size))
    record = manifest(counter, files=files, platforms=platforms, image_size=image_size)
    storage.write_atomic(os.path.join(output, MANIFEST_FILE), json.dumps(record, indent=2))
    return record


# ----------------------------------------------------------------------------------------------
# Command line.


def define_flags() -> None:
    """The command's flags, as predict.py's where they are the same (`python -m` only)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file (default: the run's config.json).", lock_config=True
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "A workdir, its best/ or checkpoints/, a step directory, or a .pth file.",
    )
    flags.DEFINE_string("output", None, "Output folder.")
    flags.DEFINE_list(
        "formats",
        ["stablehlo"],
        f"Comma-separated, of {list(FORMATS)} (all but stablehlo: crowdjax[export]).",
    )
    flags.DEFINE_list(
        "image_size",
        None,
        "HEIGHT,WIDTH: export for this image size only (required by tflite and onnx).",
    )
    flags.DEFINE_list(
        "platforms", list(DEFAULT_PLATFORMS), "Platforms the StableHLO artifact runs on."
    )
    cli.define_trust_method()
    flags.mark_flags_as_required(["checkpoint", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    console.setup(values.output)
    counter = prediction.Counter.load(
        values.checkpoint, config=values.config, trusted_method=values.trust_method
    )
    image_size = None
    if values.image_size:
        try:
            image_size = tuple(int(n) for n in values.image_size)
        except ValueError:
            raise app.UsageError(f"--image_size={values.image_size}: want HEIGHT,WIDTH") from None
    record = write(
        counter,
        values.output,
        formats=values.formats,
        platforms=values.platforms,
        image_size=image_size,
    )
    written = ", ".join(record["files"].values())
    log(f"exported {record['method']} to {media.printable(values.output)}: {written}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)

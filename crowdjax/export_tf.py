"""The exported prediction function for TensorFlow, TFLite and ONNX runtimes (crowdjax[export]).

  pip install "crowdjax[export]"
  python -m crowdjax.export --checkpoint=workdirs/quickstart --output=exported \\
      --formats=stablehlo,savedmodel,tflite,onnx --image_size=512,640

Same inputs and outputs as the StableHLO artifact (`crowdjax.export`): "images" float32
[B, H, W, 3] RGB in [0, 255] -> "density" [B, ceil(H / s), ceil(W / s)] and "count" [B].

  saved_model/  `jax2tf.convert` of the function: a TensorFlow SavedModel whose signature
                "serving_default" takes any batch, height and width. jax2tf serializes natively,
                so the SavedModel holds the StableHLO in an XlaCallModule op: TensorFlow runs it
                (CPU, GPU, TPU), converters that read TensorFlow ops do not.
  model.tflite  TFLite of the function for one input size [1, H, W, 3] (`--image_size`): the
                TFLite converter lowers the StableHLO to TFLite ops, but not the dynamic pad and
                gather of a symbolic height and width, so these files have a fixed size.
  model.onnx    the TFLite file converted by tf2onnx (`from_tflite`), inputs and outputs renamed
                to "images", "density", "count"; the same fixed size. tf2onnx does not convert
                the SavedModel (it cannot read XlaCallModule ops).
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Sequence

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
FIXED_SIZE_FORMATS = ("tflite", "onnx")


def require() -> types.SimpleNamespace:
    """The extra's modules (tf, jax2tf, tf2onnx, onnx), imported on first use: TensorFlow is
    optional and slow to import.

    Raises:
      ImportError: one is missing; the message names the extra to install.
    """
    try:
        import onnx
        import tensorflow as tf
        import tf2onnx.convert
        from jax.experimental import jax2tf
    except ImportError as error:
        raise ImportError(
            f"exporting to TensorFlow, TFLite or ONNX needs the 'export' extra ({error}): "
            'pip install "crowdjax[export]"'
        ) from error
    return types.SimpleNamespace(tf=tf, jax2tf=jax2tf, tf2onnx=tf2onnx, onnx=onnx)


def _tf_function(function: Callable, input_shape: Sequence[int | None]):
    """`function` as a tf.function over "images" of `input_shape` (None: any size)."""
    m = require()
    fixed = all(n is not None for n in input_shape)
    converted = m.jax2tf.convert(
        function,
        polymorphic_shapes=None if fixed else ["(batch, height, width, 3)"],
        native_serialization_platforms=("cpu", "cuda", "tpu"),
    )

    def serve(images):
        return converted(images)

    spec = m.tf.TensorSpec(list(input_shape), m.tf.float32, name="images")
    return m.tf.function(serve, input_signature=[spec], autograph=False)


def write_saved_model(function: Callable, path: str) -> None:
    """A SavedModel whose "serving_default" takes images of any batch, height and width."""
    tf = require().tf
    module = tf.Module()
    module.serve = _tf_function(function, [None, None, None, 3])
    tf.saved_model.save(module, path, signatures=module.serve.get_concrete_function())


def tflite_bytes(function: Callable, image_size: tuple[int, int]) -> bytes:
    """The TFLite flatbuffer for [1, H, W, 3] images (signature "serving_default")."""
    tf = require().tf
    module = tf.Module()
    module.serve = _tf_function(function, [1, *image_size, 3])
    concrete = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    return converter.convert()


def tflite_to_onnx(tflite_path: str, onnx_path: str) -> None:
    """tf2onnx's conversion of a TFLite file from `tflite_bytes`, with named inputs/outputs."""
    m = require()
    model, _ = m.tf2onnx.convert.from_tflite(tflite_path)
    # tf2onnx keeps TFLite's tensor names ("serving_default_images:0", "StatefulPartitionedCall:0"
    # ...); the outputs are told apart by rank: count [1], density [1, h, w].
    renames = {model.graph.input[0].name: "images"}
    for output in model.graph.output:
        rank = len(output.type.tensor_type.shape.dim)
        renames[output.name] = "count" if rank == 1 else "density"
    for value in (*model.graph.input, *model.graph.output):
        value.name = renames[value.name]
    for node in model.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    m.onnx.checker.check_model(model)
    m.onnx.save(model, onnx_path)


def write(
    function: Callable, output: str, *, formats: Sequence[str], image_size: tuple[int, int] | None
) -> dict:
    """Writes the TensorFlow formats among `formats` of the prediction function
    (`crowdjax.export.prediction_function`) to `output`; returns {format: file name}."""
    require()
    files = {}
    if "savedmodel" in formats:
        write_saved_model(function, os.path.join(output, SAVED_MODEL_DIR))
        files["savedmodel"] = SAVED_MODEL_DIR
    if any(f in formats for f in FIXED_SIZE_FORMATS):
        if image_size is None:
            raise ValueError(
                "TFLite and ONNX files take one image size: pass --image_size=HEIGHT,WIDTH "
                "(the TFLite converter does not take a symbolic height and width)"
            )
        tflite_path = os.path.join(output, TFLITE_FILE)
        with open(tflite_path, "wb") as f:
            f.write(tflite_bytes(function, image_size))
        if "tflite" in formats:
            files["tflite"] = TFLITE_FILE
        if "onnx" in formats:
            tflite_to_onnx(tflite_path, os.path.join(output, ONNX_FILE))
            files["onnx"] = ONNX_FILE
            if "tflite" not in formats:
                os.remove(tflite_path)
    return files

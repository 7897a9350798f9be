"""crowdjax.export: the exported prediction function against crowdjax's own `Counter.count`.

Tolerance: densities agree to 1e-6 people per cell plus 1e-5 relative, counts to 1e-5 relative
(measured: 3e-8 per cell; the exported function normalises and pads in XLA instead of with
OpenCV's lookup table and numpy, so the last float32 bits may differ).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoscale_loc_shb, autoscale_synthetic, dkpnet_synthetic, quickstart
from crowdjax import checkpointing, export, media, prediction, run
from crowdjax.models import hrnet, layers
from crowdjax.workdir import write_run_info
from tests.engine.conftest import REPO, run_script

RTOL, ATOL = 1e-5, 1e-6
# Sizes that are and are not multiples of the stride (8 or 4) and of the padding multiple (64).
SIZES = [(64, 64), (77, 101), (130, 45)]
SHANGHAITECH = os.environ.get("CROWDJAX_SHANGHAITECH_DIR") or os.path.join(
    os.path.dirname(REPO), "shared", "data", "ShanghaiTech"
)
REAL_IMAGE = os.path.join(SHANGHAITECH, "part_B", "test_data", "images", "IMG_1.jpg")


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth noise with bright blobs: an RGB uint8 image with structure at several scales."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(20):
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(image, center, int(rng.integers(2, 7)), (250, 240, 230), -1)
    return image


def _counter(config, seed: int = 0) -> prediction.Counter:
    """A Counter of `config`'s model with random weights (the method's init, no optimizer)."""
    setup = run.Setup(config, devices=jax.devices()[:1])
    key = jax.random.key(seed)
    init = functools.partial(setup.method.init_variables, config=config, input_shape=(64, 64))
    variables = jax.jit(init, static_argnums=0)(setup.model, key)
    return prediction.Counter(config, variables, setup=setup)


def _zero_counter(config) -> prediction.Counter:
    """A Counter with zero weights, for what fails before the model runs."""
    setup = run.Setup(config, devices=jax.devices()[:1])
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), setup.abstract_variables())
    return prediction.Counter(config, zeros, setup=setup)


def _uot_config():
    """The quickstart's method and model at width 1/16."""
    config = quickstart.get_config()
    config.model.width = 1 / 16
    return config


def _assert_same(exported_out: dict, expected: prediction.Prediction, index: int = 0):
    density = np.asarray(exported_out["density"][index])
    assert density.shape == expected.density.shape
    np.testing.assert_allclose(density, expected.density, rtol=RTOL, atol=ATOL)
    assert float(exported_out["count"][index]) == pytest.approx(expected.count, rel=RTOL, abs=1e-4)


@pytest.fixture(scope="module")
def uot_counter():
    return _counter(_uot_config())


@pytest.fixture(scope="module")
def uot_export(uot_counter, tmp_path_factory):
    """(export folder, manifest, the artifact as a plain JAX user loads it)."""
    folder = str(tmp_path_factory.mktemp("exported"))
    record = export.write(uot_counter, folder, platforms=("cpu",))
    with open(os.path.join(folder, export.STABLEHLO_FILE), "rb") as f:
        loaded = jax.export.deserialize(bytearray(f.read()))
    return folder, record, loaded


# ----------------------------------------------------------------------------------------------
# Resizes with symbolic sizes (what lets UOT and HRNet export for any image size).


@pytest.mark.parametrize(
    "resize,factor",
    [
        (layers.resize_bilinear_align_corners, 2),
        (hrnet.resize_bilinear, 4),
        (hrnet.resize_nearest, 2),
    ],
)
def test_resizes_with_symbolic_sizes_equal_the_concrete_ones(resize, factor):
    def upsample(x):
        return resize(x, (factor * x.shape[1], factor * x.shape[2]))

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, h, w, 2"), jnp.float32)
    exported = jax.export.export(jax.jit(upsample), platforms=("cpu",))(spec)
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (3, 5), (7, 2)]:
        x = rng.normal(size=(1, h, w, 2)).astype(np.float32)
        np.testing.assert_allclose(exported.call(x), upsample(x), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# The StableHLO artifact.


def test_stablehlo_density_equals_predict_on_sizes_not_multiple_of_the_stride(
    uot_counter, uot_export
):
    _, _, loaded = uot_export
    for seed, (h, w) in enumerate(SIZES):
        # Two images of one size in a batch: each as crowdjax predicts it alone.
        images = np.stack([_scene(h, w, seed), _scene(h, w, seed + 10)])
        out = loaded.call(images.astype(np.float32))
        for i, image in enumerate(images):
            _assert_same(out, uot_counter.count(image), index=i)


@pytest.mark.skipif(not os.path.isfile(REAL_IMAGE), reason=f"{REAL_IMAGE} not found")
def test_stablehlo_density_equals_predict_on_a_real_image(uot_counter, uot_export):
    _, _, loaded = uot_export
    image = media.read_image(REAL_IMAGE)  # 768 x 1024
    _assert_same(loaded.call(image[None].astype(np.float32)), uot_counter.count(image))


def test_manifest_says_how_to_feed_the_artifact(uot_counter, uot_export):
    folder, record, _ = uot_export
    with open(os.path.join(folder, export.MANIFEST_FILE)) as f:
        assert json.load(f) == record
    assert record["method"] == "uot"
    assert record["files"] == {"stablehlo": export.STABLEHLO_FILE}
    assert record["output_stride"] == 8 and record["padding_multiple"] == 64
    assert record["input"]["layout"] == "NHWC" and record["input"]["channels"] == "RGB"
    assert record["input"]["value_range"] == [0, 255]
    assert record["input"]["mean"] == [0.485, 0.456, 0.406]
    assert record["config"]["model"]["width"] == 1 / 16
    assert record["min_short_side"] == 0


@pytest.mark.slow
def test_dkpnet_exports_with_its_image_level_attention(tmp_path):
    # HRNet (nearest and bilinear resizes of every branch) and attention pooled over the real
    # pixels: the padding mask built inside the exported function must match crowdjax's.
    counter = _counter(dkpnet_synthetic.get_config("tiny"))
    exported = export.export_stablehlo(counter, platforms=("cpu",))
    loaded = jax.export.deserialize(exported.serialize())
    image = _scene(77, 101)
    _assert_same(loaded.call(image[None].astype(np.float32)), counter.count(image))


def test_localization_and_size_dependent_methods_are_refused_with_the_reason():
    counter = _zero_counter(autoscale_loc_shb.get_config("tiny"))
    with pytest.raises(ValueError, match="finds its heads on the host"):
        export.prediction_function(counter)
    # AutoScale's regression re-predicts a region whose size follows the image's.
    counter = _zero_counter(autoscale_synthetic.get_config("tiny"))
    with pytest.raises(ValueError, match="--image_size=HEIGHT,WIDTH"):
        export.export_stablehlo(counter, platforms=("cpu",))


# ----------------------------------------------------------------------------------------------
# As a user: the command on a workdir, then the example script in a Python without crowdjax.

# Runs a script with crowdjax unimportable (and the repo off the path: -I).
_WITHOUT_CROWDJAX = (
    "import runpy, sys; sys.modules['crowdjax'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_export_command_and_the_standalone_script_count_as_predict(tmp_path, uot_counter):
    # A workdir as train.py leaves it (config.json, a best checkpoint), of uot_counter's weights.
    workdir = str(tmp_path / "workdir")
    write_run_info(uot_counter.config, workdir)
    params, model_state = run.split_variables(uot_counter.variables)
    state = run.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=uot_counter.setup.optimizer.init(params),
        rng=jax.random.key(0),
    )
    ckpts = checkpointing.Checkpoints(workdir, async_save=False)
    ckpts.save_if_best(3, state, 1.0)
    ckpts.close()
    out = tmp_path / "exported"
    proc = run_script(["-m", "crowdjax.export", f"--checkpoint={workdir}", f"--output={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / export.MANIFEST_FILE).read_text())["checkpoint"]["step"] == 3

    image_path = tmp_path / "crowd.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(_scene(77, 101), cv2.COLOR_RGB2BGR))
    script = os.path.join(REPO, "examples", "run_exported.py")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_CROWDJAX, script, str(out), str(image_path)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert prediction.Counter.load(workdir).checkpoint_info["step"] == 3
    expected = uot_counter.count(str(image_path))  # The same weights, compiled already.
    assert record["count"] == pytest.approx(expected.count, rel=RTOL, abs=1e-4)
    assert record["density_shape"] == list(expected.density.shape)


def test_the_standalone_script_cannot_import_crowdjax(tmp_path):
    # The guard of the test above is real: a script that imports crowdjax fails under it.
    script = tmp_path / "uses_crowdjax.py"
    script.write_text("import crowdjax\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_CROWDJAX, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_tensorflow_formats_without_the_extra_name_it(uot_counter, tmp_path, monkeypatch):
    # onnx, the extra's first import, stands for it (blocking tensorflow would break
    # tensorflow_datasets first).
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=re.escape('pip install "crowdjax[export]"')):
        export.write(uot_counter, str(tmp_path), formats=("stablehlo", "savedmodel"))


def test_unknown_format_and_bad_image_size_are_refused(uot_counter, tmp_path):
    with pytest.raises(ValueError, match="unknown export formats"):
        export.write(uot_counter, str(tmp_path), formats=("stablehlo", "caffe"))
    with pytest.raises(ValueError, match="image_size"):
        export.write(uot_counter, str(tmp_path), image_size=(0, 64))


# ----------------------------------------------------------------------------------------------
# TensorFlow SavedModel, TFLite and ONNX (the export extra).


@pytest.fixture(scope="module", params=[(77, 101), (130, 45)], ids=lambda s: f"{s[0]}x{s[1]}")
def tf_export(uot_counter, tmp_path_factory, request):
    """The TensorFlow formats, exported at each of two image sizes (TFLite and ONNX are
    fixed-size)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("onnxruntime")
    folder = str(tmp_path_factory.mktemp("exported_tf"))
    record = export.write(
        uot_counter,
        folder,
        formats=("savedmodel", "tflite", "onnx"),
        platforms=("cpu",),
        image_size=request.param,
    )
    return folder, record, request.param


@pytest.mark.slow
def test_saved_model_density_equals_predict_on_any_size(uot_counter, tf_export):
    import tensorflow as tf

    folder, record, _ = tf_export
    serve = tf.saved_model.load(os.path.join(folder, record["files"]["savedmodel"]))
    serve = serve.signatures["serving_default"]
    for seed, (h, w) in enumerate(SIZES):
        image = _scene(h, w, seed)
        out = serve(images=tf.constant(image[None].astype(np.float32)))
        _assert_same({k: v.numpy() for k, v in out.items()}, uot_counter.count(image))


@pytest.mark.slow
def test_tflite_and_onnx_density_equal_predict_at_their_size(uot_counter, tf_export):
    import onnxruntime
    import tensorflow as tf

    folder, record, (h, w) = tf_export
    assert record["input"]["shape_tflite_onnx"] == [1, h, w, 3]
    image = _scene(h, w, 9)
    expected = uot_counter.count(image)
    interpreter = tf.lite.Interpreter(model_path=os.path.join(folder, record["files"]["tflite"]))
    runner = interpreter.get_signature_runner("serving_default")
    _assert_same(runner(images=image[None].astype(np.float32)), expected)
    session = onnxruntime.InferenceSession(os.path.join(folder, record["files"]["onnx"]))
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"images": image[None].astype(np.float32)})
    _assert_same(dict(zip(names, values, strict=True)), expected)


@pytest.mark.slow
def test_tflite_and_onnx_need_an_image_size(uot_counter, tmp_path):
    pytest.importorskip("tensorflow")
    with pytest.raises(ValueError, match="--image_size=HEIGHT,WIDTH"):
        export.write(uot_counter, str(tmp_path), formats=("onnx",))


@pytest.mark.slow
def test_autoscale_exports_for_one_image_size(tmp_path):
    counter = _counter(autoscale_synthetic.get_config("tiny"))
    exported = export.export_stablehlo(counter, platforms=("cpu",), image_size=(77, 101))
    image = _scene(77, 101, 2)
    _assert_same(exported.call(image[None].astype(np.float32)), counter.count(image))

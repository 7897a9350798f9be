"""crowdjax.tta: variants in one jitted call, count-preserving rescaling, ensembles, summaries."""

from __future__ import annotations

import csv
import functools
import json

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from configs import autoscale_synthetic, quickstart
from crowdjax import file_prediction, prediction, run, tta, tta_eval, zones


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def tiny_uot():
    """The quickstart's UOT regressor at width 1/16, two random initialisations."""
    config = quickstart.get_config()
    config.model.width = 1 / 16
    setup = run.Setup(config, devices=jax.devices()[:1])
    return config, setup, [_random_variables(setup, seed) for seed in (3, 4)]


def _random_variables(setup, seed: int) -> dict:
    """He-scaled random kernels, zero biases, on the model's shapes (no init to compile)."""
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if len(leaf.shape) < 2:
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(leaf.dtype)

    return jax.tree.map(fill, setup.abstract_variables())


def test_variants_parse():
    assert tta.Variants.parse("flip,scales=0.8,1.0,1.25") == tta.Variants(True, (0.8, 1.0, 1.25))
    assert tta.Variants.parse("scales=0.5,2, flip") == tta.Variants(True, (0.5, 2.0))
    assert tta.Variants.parse("") == tta.Variants(False, (1.0,))
    assert tta.Variants.parse("flip").per_model == 2
    for bad, message in [
        ("flop", "unknown variant 'flop'"),
        ("scales=0.8,-1", "positive number, got '-1'"),
        ("scales=1,1.0", "given twice"),
        ("0.8", "unknown variant"),
    ]:
        with pytest.raises(ValueError, match=message):
            tta.Variants.parse(bad)


def test_map_back_keeps_every_total_and_a_constant_density_uniform():
    rng = np.random.default_rng(0)
    density = rng.uniform(0, 1, (3, 10, 15)).astype(np.float32)
    back = np.asarray(tta.map_back(jnp.asarray(density), (8, 12)))
    assert back.shape == (3, 8, 12)
    np.testing.assert_allclose(back.sum((1, 2)), density.sum((1, 2)), rtol=1e-6)
    # A constant density c on a 10 x 15 grid spread over 8 x 12 cells: c * 150 / 96 each.
    constant = np.asarray(tta.map_back(jnp.full((1, 10, 15), 0.3), (8, 12)))
    np.testing.assert_allclose(constant, 0.3 * 150 / 96, rtol=1e-6)
    np.testing.assert_allclose(tta.resample_matrix(8, 10).sum(0), 1.0, rtol=1e-6)


def _mean_intensity_model(variables, images, image_mask, *, stride, traces):
    """A stand-in model whose count is 100 x the image's mean first channel, spread over the
    cells by where the intensity is (so a scaled constant image must keep its count)."""
    del variables, image_mask
    traces.append(images.shape)
    b, h, w, _ = images.shape
    cells = images[..., 0].reshape(b, h // stride, stride, w // stride, stride).sum((2, 4))
    return {"density": 100.0 * cells / (h * w)}


def test_a_scaled_constant_image_keeps_its_count_in_one_jitted_call():
    traces = []
    variants = tta.Variants(flip=True, scales=(0.8, 1.0, 1.25))
    fn = jax.jit(
        functools.partial(
            tta.variant_densities,
            predict=functools.partial(_mean_intensity_model, stride=8, traces=traces),
            variants=variants,
            stride=8,
            multiple=32,
        )
    )
    image = jnp.full((1, 96, 128, 3), 0.7, jnp.float32)
    mask = jnp.ones((1, 96, 128), jnp.bool_)
    out = np.asarray(fn({}, image, mask))
    assert out.shape == (6, 12, 16)
    np.testing.assert_allclose(out.sum((1, 2)), 70.0, rtol=1e-5)
    # One program: the model traced once per scale, each with the flipped copy on the batch.
    assert traces == [(2, 64, 96, 3), (2, 96, 128, 3), (2, 128, 160, 3)]
    fn({}, image * 0.5, mask)
    assert len(traces) == 3  # A second call runs the compiled program.
    # Flipped back, a mirrored image's density is the image's own (any image).
    ramp = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, 96, 128, 3)), jnp.float32)
    out = np.asarray(fn({}, ramp, mask))
    np.testing.assert_allclose(out[3], out[2], rtol=1e-5, atol=1e-6)


def test_ensemble_variants_match_plain_predictions(tiny_uot):
    config, setup, variables = tiny_uot
    counter = tta.TTACounter(
        config, variables, setup=setup, variants=tta.Variants(flip=True, scales=(1.0, 1.5))
    )
    side = 2 * counter.multiple  # No padding: flipping the padded image flips the image.
    rgb = _scene(side, side + counter.multiple)
    result = counter.count_rgb(rgb)
    counts = result.variant_counts
    assert len(counts) == 2 * 2 * 2  # models x scales x flips
    # Independent: each checkpoint on its own, on the image and on its mirror image.
    plain = [prediction.Counter(config, v, setup=setup) for v in variables]
    assert counts[0] == pytest.approx(plain[0].count_rgb(rgb).count, rel=1e-4)
    assert counts[5] == pytest.approx(plain[1].count_rgb(rgb[:, ::-1].copy()).count, rel=1e-4)
    assert result.count == pytest.approx(counts.mean())
    assert result.spread == pytest.approx(counts.std())
    assert result.interval == pytest.approx(
        (max(counts.mean() - 2 * counts.std(), 0), counts.mean() + 2 * counts.std())
    )
    assert result.density.shape == plain[0].count_rgb(rgb).density.shape
    record = result.record()
    assert record["interval"] == list(result.interval) and "disagree" in record
    assert record["variants"] == pytest.approx(counts, abs=1e-4)


@pytest.mark.slow  # ~30 s: 20 windows x 2 variants.
def test_tiled_variants_match_whole_image_variants(tiny_uot):
    config, setup, variables = tiny_uot
    variants = tta.Variants(flip=True)
    image = _scene(640, 896)
    whole = tta.TTACounter(config, variables[:1], setup=setup, variants=variants, max_pixels=10**8)
    tiled = tta.TTACounter(
        config, variables[:1], setup=setup, variants=variants, max_pixels=2 * 576 * 576
    )
    a, b = whole.count_rgb(image), tiled.count_rgb(image)
    assert a.windows == 1 and b.windows == 20
    np.testing.assert_allclose(b.variant_counts, a.variant_counts, rtol=1e-2)


def test_summary_flags_relative_spread():
    s = tta.summarize([9.0, 11.0], disagreement=0.05)  # std 1, relative 0.1
    assert (s.count, s.spread, s.interval, s.disagree) == (10.0, 1.0, (8.0, 12.0), True)
    assert tta.summarize([9.0, 11.0], interval_k=1.5).interval == (8.5, 11.5)
    assert tta.summarize([0.0, 3.0]).interval == (0.0, 4.5)  # 1.5 - 2 x 1.5 floored at 0
    assert not tta.summarize([9.0, 11.0], disagreement=0.2).disagree
    # Near-empty images: the relative spread is floored at one person (0.25 / 1, not / 0.25).
    assert tta.summarize([0.0, 0.5], disagreement=0.3).disagree is False


def test_a_localization_method_is_refused():
    config = autoscale_synthetic.get_config("loc")
    config.model.width = 1 / 16
    setup = run.Setup(config, devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="need a density method"):
        tta.TTACounter(config, [setup.abstract_variables()], setup=setup)


def test_files_get_zone_and_interval_columns_and_a_zone_outside_an_image_is_named(
    tmp_path, tiny_uot
):
    """predict.py's path for images and videos, with zones and test-time variants."""
    config, setup, variables = tiny_uot
    counter = tta.TTACounter(config, variables[:1], setup=setup, variants=tta.Variants(flip=True))
    folder = tmp_path / "in"
    folder.mkdir()
    image = _scene(96, 128)
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "small.png"), cv2.cvtColor(image[:40, :40], cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(str(folder / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 96))
    for seed in range(2):
        writer.write(cv2.cvtColor(_scene(96, 128, seed), cv2.COLOR_RGB2BGR))
    writer.release()
    zone_file = tmp_path / "zones.json"
    left = [[0, 0], [60.5, 0], [30, 96], [0, 96]]
    far = [[70, 50], [128, 50], [128, 96], [70, 96]]  # Beyond the 40 x 40 image.
    zone_file.write_text(
        json.dumps(
            {
                "zones": [
                    {"name": "left", "polygon": left, "area_m2": 4.0},
                    {"name": "far", "polygon": far, "area_m2": 2.0},
                ]
            }
        )
    )
    zone_set = zones.load_zones(str(zone_file))
    out = tmp_path / "out"
    rows, failures = file_prediction.predict_files(
        counter, [str(folder)], str(out), zone_set=zone_set
    )
    assert [(r["file"].rsplit("/", 1)[1], r["frame"]) for r in rows] == [
        ("a.png", None),
        ("v.avi", 0),
        ("v.avi", 1),
    ]
    assert [f["kind"] for f in failures] == ["zones"]
    assert "small.png" in failures[0]["error"] and "zone 'far'" in failures[0]["error"]
    # The zones of a.png, recomputed from its prediction by the brute force of test_zones.
    again = counter.count_rgb(image)
    want = _supersampled(again.density, left, image=(96, 128), stride=counter.stride)
    assert rows[0]["zones"]["left"]["count"] == pytest.approx(want, rel=2e-3)
    assert rows[0]["zones"]["left"]["per_m2"] == pytest.approx(want / 4.0, rel=2e-3)
    with open(out / "counts.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[-8:] == [
        "spread",
        "interval_low",
        "interval_high",
        "disagree",
        "zone:left",
        "zone:left:per_m2",
        "zone:far",
        "zone:far:per_m2",
    ]
    for row, record in zip(table, rows, strict=True):
        assert float(row["zone:far"]) == pytest.approx(record["zones"]["far"]["count"], abs=1e-3)
        assert float(row["interval_low"]) == pytest.approx(record["interval"][0], abs=1e-3)
        assert row["disagree"] == str(int(record["disagree"]))
    assert json.loads((out / "counts.json").read_text()) == rows
    assert (out / "overlays" / "a.png").exists() and (out / "videos" / "v.mp4").exists()


def _supersampled(density, polygon, *, image, stride, samples=16):
    """Zone count from pixel sub-samples inside the polygon (matplotlib), each adding its
    cell's density over the cell's samples (cells here lie inside the image)."""
    offsets = (np.arange(samples) + 0.5) / samples
    ys = (np.arange(image[0])[:, None] + offsets).ravel()
    xs = (np.arange(image[1])[:, None] + offsets).ravel()
    gx, gy = np.meshgrid(xs, ys)
    inside = MplPath(np.asarray(polygon)).contains_points(np.c_[gx.ravel(), gy.ravel()])
    per_sample = density[(gy.ravel() // stride).astype(int), (gx.ravel() // stride).astype(int)]
    return float((per_sample * inside).sum() / (stride * samples) ** 2)


def test_interval_metrics_by_hand():
    gt = [10, 20, 30, 40]
    rows = [
        {"count": 12.0, "spread": 1.0, "interval": (10.0, 14.0), "disagree": False},
        {"count": 20.0, "spread": 0.5, "interval": (19.0, 21.0), "disagree": False},
        {"count": 27.0, "spread": 2.0, "interval": (23.0, 31.0), "disagree": True},
        {"count": 44.0, "spread": 1.5, "interval": (41.0, 47.0), "disagree": False},
    ]
    for row, variants in zip(rows, [(11, 13), (20, 20), (25, 29), (42, 46)], strict=True):
        row["variants"] = list(variants)
    m = tta_eval.interval_metrics(gt, rows)
    # Errors 2, 0, 3, 4: inside the interval 3 of 4 (40 < 41); within 1 spread: only 20.
    assert m["mae"] == pytest.approx(9 / 4) and m["bias"] == pytest.approx(3 / 4)
    assert m["coverage_interval"] == 0.75 and m["coverage_1_spread"] == 0.25
    assert m["coverage_min_max"] == 0.25  # Only 20..20 holds its truth.
    # Spread ranks 2, 1, 4, 3 and error ranks 2, 1, 3, 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert m["spearman_spread_abs_error"] == pytest.approx(0.8)
    assert m["flagged"] == 1 and m["mae_flagged"] == 3.0

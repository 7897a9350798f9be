"""The data-set grouping of L2SM (Sec 4.2) as the engine's preparation, against a brute-force
numpy pass over every region of the training set."""

import numpy as np

from configs import l2sm_synthetic
from crowdjax.data import datasets, labels, splits
from crowdjax.methods.base import PrepareContext
from crowdjax.methods.l2sm import method


def _region_densities(density, k):
    """GT average densities of the valid K x K regions of one map, by explicit pixel loops."""
    h, w = density.shape
    n_r, n_c = -(-h // 8), -(-w // 8)
    values = []
    for a in range(k):
        for b in range(k):
            r0, r1 = 8 * (a * n_r // k), min(8 * ((a + 1) * n_r // k), h)
            c0, c1 = 8 * (b * n_c // k), min(8 * ((b + 1) * n_c // k), w)
            if r1 > r0 and c1 > c0:
                area = (r1 - r0) * (c1 - c0)
                values.append(float(density[r0:r1, c0:c1].sum(dtype=np.float64)) * 64 / area)
    return values


def _bruteforce_densities(config, data_dir):
    """Every valid region's GT average density over the stored maps of the training split."""
    view = splits.resolve(config.data, config.data.name, config.data.train_split)
    source = datasets.data_source(view.dataset, view.source_split, data_dir=data_dir)
    values = []
    for i in view.indices if view.indices is not None else range(len(source)):
        density = np.asarray(source[i]["density"], np.float32)
        values.extend(_region_densities(density, int(config.l2sm.regions)))
    return np.array(values)


def test_thresholds_and_centers_match_a_bruteforce_sort(tiny_data_dir):
    config = l2sm_synthetic.get_config("tiny")
    config.data.data_dir = tiny_data_dir
    prepared = method.prepare(PrepareContext(config, setup=None, variables={}))
    values = np.sort(_bruteforce_densities(config, tiny_data_dir))
    g, c = config.l2sm.groups, config.l2sm.centers
    assert prepared.info["regions"] == values.size == 16 * 16  # 16 training images, 4 x 4 each
    want = [values[(i * values.size) // g - 1] for i in range(1, g)]
    state = prepared.model_state["l2sm"]
    np.testing.assert_allclose(state["thresholds"], want, rtol=1e-5, atol=1e-7)
    # Centers: increasing, center j inside the density range of dense group j.
    centers = np.asarray(state["centers"])
    assert np.all(np.diff(centers) >= 0) and centers.shape == (c,)
    edges = np.concatenate([[values[0]], want, [values[-1]]])
    for j in range(c):
        assert edges[g - c + j] - 1e-6 <= centers[j] <= edges[g - c + j + 1] + 1e-6
    np.testing.assert_allclose(
        prepared.info["dense_share"], np.mean(values > want[g - c - 1]), rtol=1e-6
    )
    # SPN alone needs no grouping.
    config.model.use_l2sm = False
    assert not method.prepare(PrepareContext(config, setup=None, variables={})).model_state


def test_grouping_uses_the_training_kernel_and_tiles(tiny_data_dir):
    # Training regenerates the GT with data.density_sigma and (QNRF) cuts 2 x 2 tiles: the
    # grouping must see the same maps.
    config = l2sm_synthetic.get_config("tiny")
    config.data.data_dir = tiny_data_dir
    config.data.density_sigma = 6.0
    config.data.train_tiles = 2
    got = np.sort(method.training_region_densities(PrepareContext(config, None, {})))
    view = splits.resolve(config.data, config.data.name, config.data.train_split)
    source = datasets.data_source(view.dataset, view.source_split, data_dir=tiny_data_dir)
    want = []
    for i in range(len(source)):
        points = np.asarray(source[i]["points"], np.float32).reshape(-1, 2)
        h, w = np.asarray(source[i]["density"]).shape
        density = labels.density_map(points, (h, w), sigma=6.0)
        rows = [0, (h // 2) // 4 * 4, h]
        cols = [0, (w // 2) // 4 * 4, w]
        for a in range(2):
            for b in range(2):
                tile = density[rows[a] : rows[a + 1], cols[b] : cols[b + 1]]
                want.extend(_region_densities(tile, int(config.l2sm.regions)))
    np.testing.assert_allclose(got, np.sort(want), rtol=1e-4, atol=1e-6)

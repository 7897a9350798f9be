"""benchmarks/remat_cost.py's small step: its batch must suit the row's tiling (L2SM's UCF-QNRF
rows train on 2 x 2 tiles of each crop: a batch of 2 tiles failed there)."""

from __future__ import annotations

import sys

from crowdjax import paper_runs
from crowdjax.data import settings

sys.path.insert(0, str(paper_runs.REPO_ROOT))
from benchmarks import paper_steps, remat_cost  # noqa: E402


def test_the_small_batch_is_a_whole_number_of_tiled_images():
    tiled = paper_steps.row_config("l2sm:l2sm_qnrf", "paper")
    tiles = settings.train_tiles(tiled.data)
    assert tiles == 2
    assert remat_cost.small_batch(tiled, 2) == 4
    assert remat_cost.small_batch(tiled, 5) == 8
    plain = paper_steps.row_config("uot:uot_shb", "paper")
    assert remat_cost.small_batch(plain, 2) == 2

"""L2SM: learn to scale with multipolar normalized density maps (Xu et al., ICCV 2019).

* :mod:`crowdjax.methods.l2sm.regions`: K x K regions, their densities, the density groups.
* :mod:`crowdjax.methods.l2sm.model`: SPN, the scale map and the re-prediction head.
* :mod:`crowdjax.methods.l2sm.method`: the registered method `l2sm` (train step, prediction,
  the data-set grouping as the engine's preparation).

The multipolar center loss is :func:`crowdjax.losses.multipolar_center_loss`.
"""

"""AutoScale: learning to scale for crowd counting (Xu et al., IJCV 2022).

Two methods, one per head of the paper: density regression (Sec 3.4, `autoscale_reg`, configs
`autoscale_reg_*.py`) and localization by distance classes (Sec 3.5, `autoscale_loc`, configs
`autoscale_loc_*.py`). In the code the heads are "regression" and "localization" everywhere.

* :mod:`~crowdjax.methods.autoscale.fpn`: the VGG16-FPN counting network (either head).
* :mod:`~crowdjax.methods.autoscale.l2s`: the L2S scale predictor, the differentiable rescaling
  of a box and the point mappings between image and rescaled canvas.
* :mod:`~crowdjax.methods.autoscale.model`: FPN and L2S in one module (shared weights).
* :mod:`~crowdjax.methods.autoscale.dense_regions`: dense-region selection (host and jittable).
* :mod:`~crowdjax.methods.autoscale.heads`: what differs between the two heads, as data.
* :mod:`~crowdjax.methods.autoscale.method`: the training step and prediction of both, and the
  registered methods `REGRESSION` (`autoscale_reg`) and `LOCALIZATION` (`autoscale_loc`).

Losses: :func:`crowdjax.losses.dce_loss` (Eq. 7) and :func:`crowdjax.losses.center_loss` (Eq. 2).
"""

"""AutoScale: learning to scale for crowd counting (Xu et al., IJCV 2022).

* :mod:`~crowdjax.methods.autoscale.fpn`: the VGG16-FPN counting network (density or classes).
* :mod:`~crowdjax.methods.autoscale.l2s`: the L2S scale predictor, the differentiable rescaling
  of a box and the point mappings between image and rescaled canvas.
* :mod:`~crowdjax.methods.autoscale.model`: FPN and L2S in one module (shared weights).
* :mod:`~crowdjax.methods.autoscale.dense_regions`: dense-region selection (host and jittable).
* :mod:`~crowdjax.methods.autoscale.online_gt`: jnp density / distance-label maps of points.
* :mod:`~crowdjax.methods.autoscale.method`: the registered methods `autoscale_reg` and
  `autoscale_loc`.

Losses: :func:`crowdjax.losses.dce_loss` (Eq. 7) and :func:`crowdjax.losses.center_loss` (Eq. 2).
"""

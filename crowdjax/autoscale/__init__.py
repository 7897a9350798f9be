"""AutoScale building blocks (Xu et al., "AutoScale: learning to scale for crowd counting").

* :mod:`crowdjax.autoscale.selection`: dense-region selection (host and jittable versions).
* :mod:`crowdjax.autoscale.l2s`: the L2S scale predictor, the differentiable box rescaling and
  the point mappings between image and rescaled canvas.
* :mod:`crowdjax.autoscale.online_gt`: jnp density / distance-label maps of the rescaled points.

Model: :mod:`crowdjax.models.autoscale_fpn`; losses: :mod:`crowdjax.losses.dce`,
:mod:`crowdjax.losses.center`.
"""

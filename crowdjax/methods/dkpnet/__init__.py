"""DKPNet: variational attention for multi-domain joint training (Chen et al., ICCV 2021).

* :mod:`crowdjax.methods.dkpnet.model`: truncated HRNet-W40, x (512 channels), the attention
  (none / SE / VA / InVA) with its learnable domain priors, the 1 x 1 head.
* :mod:`crowdjax.methods.dkpnet.method`: the registered methods `dkpnet_va` (stage I) and
  `dkpnet_inva` (stage II, with the Gaussian-mixture clustering of the stage-I attention as its
  preparation).

The losses are :func:`crowdjax.losses.diag_gaussian_kl`,
:func:`crowdjax.losses.variational_attention_regularizer` and
:func:`crowdjax.losses.select_sub_centers`; the backbone is :mod:`crowdjax.models.hrnet`.
"""

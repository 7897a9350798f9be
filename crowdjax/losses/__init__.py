"""Pure, jittable losses with documented shapes; import them directly in notebooks.

from crowdjax.losses import uot_loss, UOTOptions, dce_loss, density_mse_loss, multipolar_center_loss
from crowdjax.losses import adversarial_scores, domain_bce, scored_density_loss
from crowdjax.losses import diag_gaussian_kl, variational_attention_regularizer
"""

from crowdjax.losses.adversarial import adversarial_scores, domain_bce, scored_density_loss
from crowdjax.losses.center import center_loss, update_center
from crowdjax.losses.center import closeness as closeness_jnp
from crowdjax.losses.dce import cross_entropy_loss, dce_loss, dce_weight, focal_loss
from crowdjax.losses.density import density_mse_loss
from crowdjax.losses.mpcl import multipolar_center_loss, update_multipolar_centers
from crowdjax.losses.uot import UOTOptions, UOTSolution, uot_loss, uot_semi_dual, uot_solve
from crowdjax.losses.variational import (
    diag_gaussian_kl,
    select_sub_centers,
    variational_attention_regularizer,
)

__all__ = [
    "UOTOptions",
    "UOTSolution",
    "adversarial_scores",
    "center_loss",
    "closeness_jnp",
    "cross_entropy_loss",
    "dce_loss",
    "dce_weight",
    "diag_gaussian_kl",
    "domain_bce",
    "density_mse_loss",
    "focal_loss",
    "multipolar_center_loss",
    "scored_density_loss",
    "select_sub_centers",
    "uot_loss",
    "uot_semi_dual",
    "uot_solve",
    "update_center",
    "update_multipolar_centers",
    "variational_attention_regularizer",
]

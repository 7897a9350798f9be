"""ASNet: adversarial scoring network for domain-adaptive counting (Zou et al., ACM MM 2021).

* :mod:`crowdjax.methods.asnet.model`: the generator G and the discriminators D1 (global), D2
  (local).
* :mod:`crowdjax.methods.asnet.method`: the registered method `asnet` (the alternating D1, D2, G
  step of Alg. 1, prediction).

The losses and scores are :func:`crowdjax.losses.domain_bce`,
:func:`crowdjax.losses.adversarial_scores` and :func:`crowdjax.losses.scored_density_loss`.
"""

"""UOT: learning to count via unbalanced optimal transport (Ma et al., AAAI 2021).

* :mod:`crowdjax.methods.uot.model`: the Bayesian-loss VGG19 regressor and its weight importer.
* :mod:`crowdjax.methods.uot.method`: the registered method `uot`.

The loss itself is :func:`crowdjax.losses.uot_loss`.
"""

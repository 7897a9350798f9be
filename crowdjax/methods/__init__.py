"""The counting methods, one package each: its model, its own pieces and its `Method`.

`crowdjax.registry` maps names to them; `crowdjax.methods.base.Method` says what a method gives
the generic trainer.
"""

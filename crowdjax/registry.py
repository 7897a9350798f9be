"""The one registry of counting methods: name -> "module" defining `METHOD`, or "module:NAME".

Modules are imported on first use, so importing crowdjax stays light.
"""

from __future__ import annotations

import importlib

from crowdjax.methods.base import Method

_METHODS = {
    "uot": "crowdjax.methods.uot",
    "autoscale_reg": "crowdjax.methods.autoscale:REGRESSION",
    "autoscale_loc": "crowdjax.methods.autoscale:LOCALIZATION",
}


def method_names() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """Returns the registered method `name`; an unknown name lists the valid ones."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; registered methods: {method_names()}")
    module, _, attr = _METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attr or "METHOD")

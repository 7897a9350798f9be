"""The one registry of counting methods: name -> "module" defining `METHOD`, or "module:NAME".

Modules are imported on first use, so importing crowdjax stays light. A method of your own needs
no edit here: `config.method = "my_package.my_module:METHOD"` names it directly. Such a name
imports (runs) the module it names, so a config that comes with someone else's files is read with
`registered_only=True` (`crowdjax.workdir.load_config`).
"""

from __future__ import annotations

import importlib

from crowdjax.methods.base import Method

_METHODS = {
    "uot": "crowdjax.methods.uot.method",
    "autoscale_reg": "crowdjax.methods.autoscale.method:REGRESSION",
    "autoscale_loc": "crowdjax.methods.autoscale.method:LOCALIZATION",
    "l2sm": "crowdjax.methods.l2sm.method",
    "asnet": "crowdjax.methods.asnet.method",
    "dkpnet_va": "crowdjax.methods.dkpnet.method:VA",
    "dkpnet_inva": "crowdjax.methods.dkpnet.method:INVA",
}


def method_names() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str, *, registered_only: bool = False) -> Method:
    """Returns the registered method `name` (or the `Method` at "module:ATTR", unless
    `registered_only`); an unknown name lists the valid ones."""
    if name in _METHODS:
        target = _METHODS[name]
    elif ":" in name and registered_only:
        raise ValueError(
            f"method {name!r} is not registered ({method_names()}); a 'module:ATTR' method is "
            "not imported from here, since importing runs that module's code"
        )
    elif ":" in name:
        target = name
    else:
        raise ValueError(
            f"unknown method {name!r}; registered methods: {method_names()} (or give "
            "'module:ATTR' naming a crowdjax.methods.base.Method)"
        )
    module, _, attr = target.partition(":")
    method = getattr(importlib.import_module(module), attr or "METHOD")
    if not isinstance(method, Method):
        raise TypeError(f"{target} is a {type(method).__name__}, not a crowdjax Method")
    return method

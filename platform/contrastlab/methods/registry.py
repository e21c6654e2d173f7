"""Methods by name. A method module registers itself with `@register_method`."""

from __future__ import annotations

import importlib

_METHODS: dict[str, type] = {}
# Modules imported on first look-up, so `import contrastlab.config` stays light.
_BUILTIN_MODULES = ("simclr", "moco", "mochi", "sscl", "slr", "hcl", "mcl", "metaug")


def register_method(name: str):
    def decorate(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        cls.method_name = name
        _METHODS[name] = cls
        return cls

    return decorate


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"contrastlab.methods.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"contrastlab.methods.{module}":
                raise


def get_method_class(name: str) -> type:
    if name not in _METHODS:
        _import_builtins()
    if name not in _METHODS:
        raise KeyError(f"one of {', '.join(sorted(_METHODS))} (unknown method {name!r})")
    return _METHODS[name]


def available_methods() -> list[str]:
    _import_builtins()
    return sorted(_METHODS)

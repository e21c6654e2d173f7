"""docs/architecture.md names only functions and classes that exist where it says they are."""

from __future__ import annotations

import builtins
import importlib
import re
import typing
from types import ModuleType

from tests.helpers import ROOT

PAGE = ROOT / "docs" / "architecture.md"
# Names from outside the package that the page may mention in backticks.
EXTERNAL = ("torch", "torch.nn", "ray.train.torch")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def module_prefix(dotted: str) -> tuple[ModuleType, list[str]] | None:
    """The longest importable module at the start of `dotted`, and the names after it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            return importlib.import_module(".".join(parts[:cut])), parts[cut:]
        except ImportError:
            continue
    return None


def has(obj: object, name: str) -> bool:
    """`obj.name` exists, counting dataclass fields and annotated attributes of classes."""
    if hasattr(obj, name):
        return True
    if isinstance(obj, type):
        return any(name in getattr(k, "__annotations__", {}) for k in obj.__mro__)
    return False


def resolves(obj: object, names: list[str]) -> bool:
    for name in names:
        if not has(obj, name):
            return False
        obj = getattr(obj, name, None)
    return True


def checked_names(span: str) -> str | None:
    """The name a backticked span refers to, when it names a function or class."""
    match = IDENTIFIER.match(span)
    if not match:
        return None
    name, rest = match.group(), span[match.end() :]
    if rest.startswith("("):
        return name
    if name.startswith("contrastlab."):
        return name
    if not rest and name[0].isupper() and not name.isupper() or name.isupper() and not rest and "_" in name:
        return name
    return None


def sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^## ", text, flags=re.M)
    return [(part.splitlines()[0], part) for part in parts[1:]]


def resolve(name: str, modules: list[ModuleType]) -> bool:
    if name.startswith("contrastlab."):
        found = module_prefix(name)
        return found is not None and resolves(found[0], found[1])
    head, *rest = name.split(".")
    for module in [*modules, builtins, typing, *map(importlib.import_module, EXTERNAL)]:
        if has(module, head) and resolves(getattr(module, head), rest):
            return True
        # A method or attribute of one of the module's classes (`train_step(...)` of `Method`).
        if not rest and any(isinstance(v, type) and has(v, head) for v in vars(module).values()):
            if module not in (builtins, typing) and module.__name__ not in EXTERNAL:
                return True
    return False


def missing_names(text: str) -> list[str]:
    missing = []
    for title, body in sections(text):
        spans = re.findall(r"`([^`\n]+)`", body)
        modules = []
        for span in spans:
            match = IDENTIFIER.match(span)
            if match and match.group().startswith("contrastlab."):
                found = module_prefix(match.group())
                if found and found[0] not in modules:
                    modules.append(found[0])
        for span in spans:
            name = checked_names(span)
            if name and not resolve(name, modules):
                missing.append(f"{title}: `{span}`")
    return missing


def test_every_function_and_class_on_the_page_exists():
    text = PAGE.read_text()
    assert len(sections(text)) >= 6
    assert missing_names(text) == []


def test_the_check_catches_a_name_that_drifted():
    page = (
        "## engine (`contrastlab.engine`)\n\n- `build_run(cfg)` and `Trainer` exist; "
        "`build_optimizers(cfg)` and `Distributed` do not, nor `contrastlab.engine.gone`.\n"
    )
    assert missing_names(page) == [
        "engine (`contrastlab.engine`): `build_optimizers(cfg)`",
        "engine (`contrastlab.engine`): `Distributed`",
        "engine (`contrastlab.engine`): `contrastlab.engine.gone`",
    ]

"""The test suite's own layout: oracles in reference.py, builders in helpers.py, fixtures in
conftest.py, and no test module importing another test module or conftest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SUPPORT = {"reference.py", "helpers.py", "conftest.py", "__init__.py"}
# Public functions conftest may define besides fixtures: the Ray lock the fixtures hold.
CONFTEST_NON_FIXTURES = {"ray_host_lock"}


def imported_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The module names an import statement reaches within the tests folder, or at the top level."""
    if isinstance(node, ast.Import):
        return [alias.name.removeprefix("tests.") for alias in node.names]
    parts = [part for part in (node.module or "").split(".") if part]
    if node.level == 0 and parts[:1] != ["tests"]:
        return parts[:1] if len(parts) == 1 else []  # `from conftest import x`; library imports pass
    inside = parts[1:] if node.level == 0 else parts
    return inside[:1] if inside else [alias.name for alias in node.names]


def import_violations(source: str, filename: str = "<test>") -> list[str]:
    """'file:line: ...' for each import of a test module or of conftest, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for module in imported_modules(node):
                name = module.split(".")[0]
                if name.startswith("test_") or name == "conftest":
                    found.append(f"{filename}:{node.lineno}: imports {name} (take it from helpers.py or reference.py)")
    return found


def oracle_violations(source: str, filename: str = "<test>") -> list[str]:
    """'file:line: ...' for each NumPy oracle defined at the top level of a test module: a
    function named np_* or *reference*, the names the suite gives its reference implementations."""
    found = []
    for node in ast.parse(source, filename).body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("test"):
            continue
        if node.name.startswith("np_") or "reference" in node.name:
            found.append(f"{filename}:{node.lineno}: defines the oracle {node.name} (it belongs in reference.py)")
    return found


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) in ("pytest.fixture", "fixture")


def conftest_violations(source: str, filename: str = "conftest.py") -> list[str]:
    """'file:line: ...' for each public top-level function or class of conftest that is not a
    fixture (the Ray host lock excepted): builders belong in helpers.py."""
    found = []
    for node in ast.parse(source, filename).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or node.name.startswith("_"):
            continue
        if node.name in CONFTEST_NON_FIXTURES or any(_is_fixture(d) for d in node.decorator_list):
            continue
        found.append(f"{filename}:{node.lineno}: {node.name} is not a fixture (builders belong in helpers.py)")
    return found


def _modules() -> list[Path]:
    return sorted(TESTS.glob("*.py"))


def test_the_suite_has_its_support_modules():
    names = {path.name for path in _modules()}
    assert SUPPORT <= names
    assert len(names - SUPPORT) > 30


def test_no_module_imports_a_test_module_or_conftest():
    found = [v for path in _modules() for v in import_violations(path.read_text(), path.name)]
    assert not found, "\n".join(found)


def test_test_modules_define_no_oracles():
    found = [
        v for path in _modules() if path.name not in SUPPORT for v in oracle_violations(path.read_text(), path.name)
    ]
    assert not found, "\n".join(found)


def test_conftest_defines_fixtures_only():
    found = conftest_violations((TESTS / "conftest.py").read_text())
    assert not found, "\n".join(found)


# -- the checks themselves ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        "from tests.test_method_sscl import recording",
        "from tests.conftest import tiny_config",
        "from .test_engine import params_of",
        "from . import test_engine",
        "from tests import conftest",
        "from tests import helpers, test_data",
        "import tests.test_config",
        "import tests.conftest as c",
        "from conftest import ROOT",
        "from test_losses_oucl import scores",
        "import test_losses_oucl",
        "def f():\n    from tests.conftest import tiny_config_dict",
    ],
)
def test_import_check_names_file_and_line(line):
    source = "import math\n" + line + "\n"
    (found,) = import_violations(source, "test_x.py")
    assert found.startswith(f"test_x.py:{len(source.splitlines())}: imports ")


@pytest.mark.parametrize(
    "line",
    [
        "from tests.helpers import tiny_config",
        "from tests.reference import np_oucl",
        "from tests import helpers, reference",
        "from . import helpers",
        "import tests.helpers",
        "from contrastlab.testing import test_tools",
        "from contrastlab import conftest_like",
        "import numpy as np",
    ],
)
def test_import_check_allows_support_and_library_imports(line):
    assert import_violations(line + "\n") == []


def test_oracle_check_names_np_and_reference_functions():
    source = "def np_loss(x):\n    pass\n\n\ndef build():\n    pass\n\n\ndef mochi_reference(q):\n    pass\n"
    assert oracle_violations(source, "test_x.py") == [
        "test_x.py:1: defines the oracle np_loss (it belongs in reference.py)",
        "test_x.py:9: defines the oracle mochi_reference (it belongs in reference.py)",
    ]
    assert oracle_violations("def test_np_matches_the_reference():\n    reference = 1\n") == []


def test_conftest_check_allows_fixtures_and_the_lock_only():
    source = (
        "import pytest\n"
        "@pytest.fixture\ndef a():\n    pass\n"
        "@pytest.fixture(scope='module')\ndef b():\n    pass\n"
        "def ray_host_lock():\n    pass\n"
        "def _private():\n    pass\n"
        "def tiny_config():\n    pass\n"
        "class Builder:\n    pass\n"
    )
    assert [v.split(": ")[1] for v in conftest_violations(source)] == [
        "tiny_config is not a fixture (builders belong in helpers.py)",
        "Builder is not a fixture (builders belong in helpers.py)",
    ]

"""The layout's rules, read from the imports (an AST walk): what may import what.

Commands are the modules at the top of ``speechrnn/``; the library is its subpackages.
Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import speechrnn
from speechrnn.core.errors import SpeechRNNError

from helpers import ROOT

PACKAGE = Path(speechrnn.__file__).parent
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "torchmetrics")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
COMMANDS = {m for m, p in MODULES.items() if p.parent == PACKAGE and p.name != "__init__.py"}
LIBRARY = {m for m in MODULES if m.count(".") >= 1 and m not in COMMANDS}


def imports(module: str) -> set[str]:
    """Every module ``module`` imports (absolute names; ``from a import b`` counts ``a.b`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


def package_imports(module: str) -> set[str]:
    return {m for m in imports(module) if m in MODULES and m != "speechrnn"}


def closure(module: str) -> set[str]:
    """The package modules ``module`` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for m in package_imports(todo.pop()) - seen:
            seen.add(m)
            todo.append(m)
    return seen


def test_the_layout_has_commands_on_top_and_the_library_in_role_subpackages():
    assert {"speechrnn.train", "speechrnn.evaluate", "speechrnn.transcribe"} <= COMMANDS
    assert {m.split(".")[1] for m in LIBRARY} == {"core", "data", "model", "training", "inference", "evaluation"}


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_no_library_module_imports_a_command(module):
    assert not package_imports(module) & COMMANDS


# what each subpackage's __init__.py says it may import from the package
MAY_IMPORT = {
    "core": {"core"},
    "data": {"core", "data"},
    "model": {"core", "model"},
    "training": {"core", "data", "model", "evaluation", "training"},
    "inference": {"core", "model", "inference", "data.labels"},
    "evaluation": {"core", "data", "model", "inference", "evaluation"},
}


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_each_subpackage_imports_only_what_its_init_allows(module):
    allowed = MAY_IMPORT[module.split(".")[1]]
    used = {m.removeprefix("speechrnn.") for m in package_imports(module)}
    assert [m for m in used if m.split(".")[0] not in allowed and ".".join(m.split(".")[:2]) not in allowed] == []


def test_nothing_imports_a_command():
    assert not {m for c in MODULES for m in package_imports(c)} & COMMANDS


def test_no_import_cycles():
    cyclic = sorted(m for m in MODULES if m in closure(m))
    assert cyclic == []


@pytest.mark.parametrize("module", sorted(m for m in LIBRARY if m.startswith("speechrnn.core")))
def test_core_imports_nothing_else_from_the_package(module):
    assert all(m.startswith("speechrnn.core") for m in package_imports(module))


@pytest.mark.parametrize("module", sorted(m for m in LIBRARY if m.startswith(("speechrnn.model", "speechrnn.inference"))))
def test_model_and_inference_need_neither_lightning_nor_hydra(module):
    used = {m.split(".")[0] for part in {module} | closure(module) for m in imports(part)}
    assert not used & set(FRAMEWORKS)


def test_every_error_class_of_the_package_is_a_user_error_that_friendly_catches():
    errors = [cls for name in sorted(MODULES) for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass)
              if cls.__module__ == name and issubclass(cls, Exception)]
    assert len(errors) >= 8  # audio, dataset, checkpoint, config, download (3), non-finite loss
    assert [cls.__name__ for cls in errors if not issubclass(cls, SpeechRNNError)] == []


def test_no_module_asks_which_encoder_it_holds():
    encoders = {"ElmanRNN", "TorchRecurrent", "GRU", "LSTM", "RNN"}
    asks = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {getattr(n, "id", getattr(n, "attr", None)) for n in ast.walk(node.args[1])}
                if names & encoders:
                    asks.append(module)
    assert asks == []


def test_the_tests_mirror_the_package_and_import_no_other_test_file():
    tests = ROOT / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders == {"core", "data", "model", "training", "inference", "evaluation", "commands"}
    for path in tests.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[-1].startswith(("test_", "conftest"))], path

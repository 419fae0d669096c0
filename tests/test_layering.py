"""The one import rule (docs/architecture.md): ``kernels`` depends on ``quant.contract`` only, the contract on
nothing else of ``quant``, and no module of ``quant`` imports ``kernels``; backends are found by name."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names), at any depth of its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_module_of_quant_imports_kernels() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "kernels")
                 for p in _modules("quant")}  # fmt: skip
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_of_quant_or_kernels_imports_the_experiments() -> None:
    """The library never reaches into the apps, models and data of experiments/ (they import the library)."""
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "experiments")
                 for p in (*_modules("quant"), *_modules("kernels"))}  # fmt: skip
    assert {k: v for k, v in offenders.items() if v} == {}


def test_kernels_imports_only_the_contract_of_quant() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "quant" and not m.startswith("quant.contract"))
        for p in _modules("kernels")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_contract_imports_nothing_else_of_quant_and_no_tensor_library() -> None:
    offenders = {}
    for p in _modules("quant/contract"):
        bad = sorted(
            m for m in _imports(p)
            if (m.split(".")[0] == "quant" and not m.startswith("quant.contract")) or m.split(".")[0] == "torch"
        )  # fmt: skip
        if bad:
            offenders[str(p.relative_to(ROOT))] = bad
    assert offenders == {}


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded: list[str] = json.loads(out)
    return loaded


@pytest.mark.parametrize("statement", ["import kernels", "import quant.contract", "import kernels.backend"])
def test_importing_the_datapath_loads_no_simulation(statement: str) -> None:
    """Measured in a fresh interpreter: no torch (so no torch.fx), no hooks, observers or simulation modules."""
    loaded = _loaded_after(statement)
    assert not [m for m in loaded if m == "torch" or m.startswith("torch.")]
    assert not [m for m in loaded if m.startswith(("quant.sim", "quant.reference"))]


def test_the_c_backend_is_found_by_name_on_first_use() -> None:
    loaded = _loaded_after("from quant.contract.backend import get_backend; assert get_backend('c').name == 'c'")
    assert "kernels.backend" in loaded

"""The layers of operator/rolecall, enforced: only adapters talk to AWS and Kubernetes, the
pure decisions import no I/O and read no clock, nothing imports upward.

The layer order itself (and that adapters never import each other) is import-linter's
contract in pyproject.toml, run by ``make lint`` and by the test below; this file adds what
import-linter cannot say: which module may use which outside library, and that pure modules
never read the clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "rolecall"
PURE = {
    "access",
    "schedule",
    "render",
    "model",
    "inject",
    "admission",
    "index",
    "status",
    "constants",
    "timefmt",
}
ADAPTER_OF = {
    "boto3": {"sts"},
    "botocore": {"sts"},
    "kubernetes": {"kube"},
    "kopf": {"handlers", "app", "runtime", "webhookserver"},
}


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "rolecall":
                found.update(f"rolecall.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("library", sorted(ADAPTER_OF))
def test_only_the_adapters_import_io_libraries(library: str) -> None:
    users = {
        name
        for name, tree in modules().items()
        if any(i == library or i.startswith(library + ".") for i in imports(tree))
    }
    assert users <= ADAPTER_OF[library], f"{library} imported by {sorted(users - ADAPTER_OF[library])}"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_import_no_io_and_read_no_clock(name: str) -> None:
    tree = modules()[name]
    found = imports(tree)
    own = {i.split(".")[1] for i in found if i.startswith("rolecall.")}
    assert own <= PURE, f"{name} imports {sorted(own - PURE)}"
    io_modules = {"time", "socket", "asyncio", "threading", "subprocess", "urllib", "http", "os", "random"}
    assert not {i.split(".")[0] for i in found} & io_modules, f"{name} imports I/O or the clock"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("now", "utcnow", "time", "monotonic", "today"):
            base = node.value
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            assert base_name not in ("datetime", "time", "date"), (
                f"{name} reads the clock ({base_name}.{node.attr})"
            )


def test_import_linter_contracts_hold() -> None:
    """The layers contract in pyproject.toml (lint-imports), as part of the test suite."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (it is in the test extras)"
    result = subprocess.run(
        [exe, "--no-cache"], cwd=PACKAGE.parents[1], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_folder_has_no_init() -> None:
    assert not (PACKAGE.parent / "__init__.py").exists(), (
        "operator/__init__.py would shadow the stdlib module `operator`"
    )

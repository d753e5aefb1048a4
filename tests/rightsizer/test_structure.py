"""The rightsizer's structure, held by reading its source: one module writes to Azure, deciding never imports
acting, and no module reaches for another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rightsizer"
GATEWAY = PACKAGE / "azure" / "gateway.py"
WRITE_METHODS = frozenset({"create_or_update", "update_tags", "delete", "simulate_eviction", "reimage", "redeploy"})
"""Azure SDK operations that change something, besides every ``begin_*`` long-running operation."""


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "examples" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def test_only_the_gateway_imports_the_azure_management_sdk_or_calls_its_write_methods() -> None:
    offenders = []
    for path in modules():
        if path == GATEWAY:
            continue
        for module, _ in imports(path):
            if module.startswith("azure.mgmt"):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                if name.startswith("begin_") or name in WRITE_METHODS:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls .{name}()")
    assert offenders == []


def test_the_check_would_catch_a_write_outside_the_gateway(tmp_path: Path) -> None:
    # The scan above is only worth something if it sees what it looks for.
    sample = tmp_path / "x.py"
    sample.write_text("from azure.mgmt.compute import ComputeManagementClient\nclient.vms.begin_update(1)\n")
    tree = ast.parse(sample.read_text())
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert "begin_update" in calls
    assert any(isinstance(n, ast.ImportFrom) and n.module == "azure.mgmt.compute" for n in ast.walk(tree))


def test_deciding_never_imports_acting_and_apply_and_recover_do_not_import_each_other() -> None:
    problems = []
    for path in modules():
        name = module_name(path)
        for module, _ in imports(path):
            if (
                name.startswith("rightsizer.decide")
                and module.startswith("rightsizer.act")
                and (module != "rightsizer.act.settings")
            ):
                problems.append(f"{name} imports {module}")
            if name == "rightsizer.act.recover" and module == "rightsizer.act.apply":
                problems.append(f"{name} imports {module}")
    assert problems == []


def test_no_module_imports_another_modules_private_names() -> None:
    problems = []
    for path in modules():
        for module, names in imports(path):
            if module.startswith("rightsizer"):
                problems += [f"{module_name(path)} imports {module}.{n}" for n in names if n.startswith("_")]
    assert problems == []

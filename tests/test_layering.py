"""The architecture, checked on the real import graph (every ``import`` statement, lazy ones in
function bodies included, parsed with ``ast``; nothing is imported).

- ``kroncl/`` is the library: it imports neither ``pipelines`` nor ``registry`` (the applications),
  except the thin entry ``kroncl/run.py``;
- ``registry/`` is torch-free: it imports neither ``torch`` nor ``kroncl``;
- ``kroncl/adapters`` is the bottom layer: it imports neither ``kroncl.quant`` nor ``kroncl.strategy``;
- ``kroncl.strategy`` (avalanche) is a top layer: nothing else in ``kroncl/`` imports it;
- no source file is over MAX_LINES lines, except a named allow-list.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, absolute; ``from a import b`` yields both ``a`` and ``a.b``
    (``b`` may be a submodule). ``importlib.import_module("x")`` with a literal counts too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.add(node.args[0].value)
    return frozenset(found)


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{rel(p)} imports {m}" for p in paths for m in sorted(imports_of(p))
            if any(is_within(m, f) for f in forbidden)]


def test_the_scan_sees_lazy_relative_and_from_imports(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    mod = tmp_path / "kroncl" / "adapters" / "x.py"
    mod.parent.mkdir(parents=True)
    mod.write_text("import os\nfrom ..quant import a\nfrom kroncl import strategy\n"
                   "def f():\n    import pipelines.compose\n    importlib.import_module('registry.store')\n")
    found = imports_of(mod)
    assert {"os", "kroncl.quant", "kroncl.quant.a", "kroncl.strategy", "pipelines.compose", "registry.store"} <= found
    assert violations([mod], ("pipelines", "registry")) == [
        "kroncl/adapters/x.py imports pipelines.compose", "kroncl/adapters/x.py imports registry.store"]


def test_the_library_imports_no_application():
    library = [p for p in sources("kroncl") if rel(p) != "kroncl/run.py"]
    assert len(library) > 20  # the scan found the package
    assert violations(library, ("pipelines", "registry")) == []


def test_the_run_entry_is_the_one_library_module_that_reaches_the_applications():
    assert any(is_within(m, "pipelines") for m in imports_of(ROOT / "kroncl" / "run.py"))


def test_the_registry_is_torch_free_and_library_free():
    registry = sources("registry")
    assert any(rel(p) == "registry/store.py" for p in registry)
    assert violations(registry, ("torch", "kroncl")) == []


def test_adapters_do_not_import_strategy():
    assert violations(sources("kroncl/adapters"), ("kroncl.strategy",)) == []


def test_adapters_do_not_import_quant():
    assert violations(sources("kroncl/adapters"), ("kroncl.quant",)) == []


def test_only_the_strategy_package_imports_strategy():
    outside = [p for p in sources("kroncl") if not rel(p).startswith("kroncl/strategy/")]
    assert violations(outside, ("kroncl.strategy",)) == []


def test_no_source_file_is_over_the_line_limit():
    counts = {rel(p): len(p.read_text(encoding="utf-8").splitlines())
              for package in ("kroncl", "registry", "pipelines") for p in sources(package)}
    too_long = {f: n for f, n in counts.items() if n > MAX_LINES}
    assert too_long == {}, f"over {MAX_LINES} lines (split them): {too_long}"

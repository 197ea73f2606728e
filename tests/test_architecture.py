"""The layout docs/architecture.md draws, read back from the source: which package may import
which, no import cycle between modules (imports inside functions count too), and what stands at
the top of bench/. Imports are read with ``ast``, so nothing here runs the harness."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("bench", "models", "kernels")

#: bench's packages and what each may import (besides itself, models and kernels); the table
#: in docs/architecture.md, "Packages and what they may import"
BENCH_MAY_IMPORT = {
    "data": set(),
    "evaluation": {"data"},
    "config": {"data", "evaluation"},
    "results": {"config"},
    "profiling": {"config", "results"},
    "reporting": {"config", "results", "profiling"},
    "run": {"config", "data", "evaluation", "results", "profiling", "reporting"},
    "diagnostics": {"config", "results", "profiling"},
    "cli": {"config", "data", "evaluation", "results", "profiling", "reporting", "run",
            "diagnostics"},
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for top in TOP_LEVEL for p in (root / top).rglob("*.py")}


def imported_modules(path: Path, known: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The project modules ``path`` imports, anywhere in the file; ``from pkg import name``
    counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = source_modules()
    return {name: imported_modules(path, known) - {name} for name, path in known.items()}


def bench_part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "bench" or len(parts) == 1:
        return None
    return parts[1]


def test_bench_top_level_holds_only_the_cli_and_the_public_names():
    top = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    assert top == ["__init__.py", "cli.py"]
    packages = sorted(p.name for p in (ROOT / "bench").iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    assert packages == sorted(set(BENCH_MAY_IMPORT) - {"cli"})


def test_imports_flow_bench_models_kernels(graph):
    order = {"kernels": 0, "models": 1, "bench": 2}
    upward = [(a, b) for a, deps in graph.items() for b in deps
              if order[b.split(".")[0]] > order[a.split(".")[0]]]
    assert upward == []


def test_bench_packages_import_only_what_the_architecture_allows(graph):
    wrong = []
    for module, deps in graph.items():
        part = bench_part(module)
        if part is None:
            continue
        allowed = BENCH_MAY_IMPORT[part] | {part}
        wrong += [(module, dep) for dep in deps
                  if bench_part(dep) is not None and bench_part(dep) not in allowed]
    assert wrong == []


def test_no_import_cycles(graph):
    """Tarjan's strongly connected components over the module graph: each must be one module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The reader above finds what it is meant to: on a toy tree with a cycle and a
    models -> bench import, the graph has both edges."""
    for rel, text in {"bench/__init__.py": "", "bench/a.py": "from bench import b\n",
                      "bench/b.py": "def f():\n    import bench.a\n",
                      "models/__init__.py": "", "models/m.py": "from bench.a import x\n",
                      "kernels/__init__.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    known = source_modules(tmp_path)
    edges = {name: imported_modules(path, known, tmp_path) for name, path in known.items()}
    assert edges["bench.a"] == {"bench.b"}
    assert edges["bench.b"] == {"bench.a"}
    assert edges["models.m"] == {"bench.a"}

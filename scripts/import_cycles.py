"""Lists the import cycles among the modules of a package (default: src/mtu); exits 1 if there is any.

    python scripts/import_cycles.py [PACKAGE_DIR]

Static: every module's imports are read with `ast` (top-level and function-level, absolute and relative), each
resolved to the package's own modules; `from package import name` counts as importing the submodule `name` when
there is one, else the package. Importing `a.b.c` also imports the packages `a` and `a.b` (their __init__ runs
first), except the importer's own enclosing packages, which are already running. A cycle is a strongly connected component of more than one module (Tarjan), each
printed with one import that closes it at every step. `if TYPE_CHECKING:` imports count too: they are cycles that
only the type checker sees, and the house rule is that imports flow one way.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DEFAULT_PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mtu"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `package` (a folder with __init__.py)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` statement names."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The package modules `module` imports -> the line of the first such import."""
    found: dict[str, int] = {}

    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}

    def add(target: str, line: int) -> None:
        while target and target not in modules:  # `import mtu.a.b.name` -> the deepest module that exists
            target = target.rpartition(".")[0]
        if not target or target == module:
            return
        found.setdefault(target, line)
        # Importing `a.b.c` first runs the __init__ of `a` and `a.b`, except those already running (this module's own)
        parts = target.split(".")
        for package in (".".join(parts[:i]) for i in range(1, len(parts))):
            if package not in own_packages and package != module:
                found.setdefault(package, line)

    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source, node.lineno)
    return found


def import_graph(package: Path) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    modules = module_names(package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}, modules


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; only those of more than one module."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = counter[0]
                    counter[0] += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def describe(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> list[str]:
    """One line per import inside the component: "a (a.py:12) -> b"."""
    members = set(component)
    return [f"  {source} ({modules[source].name}:{line}) -> {target}"
            for source in component for target, line in sorted(graph[source].items()) if target in members]


def main(argv: list[str]) -> int:
    package = Path(argv[0]) if argv else DEFAULT_PACKAGE
    graph, modules = import_graph(package)
    cycles = strongly_connected(graph)
    for component in cycles:
        print(f"import cycle among {len(component)} modules: {', '.join(component)}")
        print("\n".join(describe(component, graph, modules)))
    print(f"{len(modules)} modules, {sum(map(len, graph.values()))} imports, {len(cycles)} import cycle(s)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

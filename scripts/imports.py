"""The project's import graph, read from the source (every import: inside functions and under TYPE_CHECKING
too, which are coupling as real as any other).

    .venv/bin/python scripts/imports.py            # package -> packages it imports, and the rules
    .venv/bin/python scripts/imports.py --modules  # module -> project modules it imports

Exits 1, naming what breaks them, if ``model/`` imports anything from ``ablate/`` (the model is a library on
its own) or if project modules import each other in a circle (each circle is shown with the lines that close
it). ``from a import b`` is an import of the module ``a.b`` where ``b`` is one, else of ``a``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "ablate")

Edges = dict[str, dict[str, int]]  # module -> project module it imports -> the line of its first import


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> dict[str, int]:
    """The project modules ``path`` imports, each with the line of its first import (absolute imports; the
    project uses no relative ones)."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found[name] = min(found.get(name, node.lineno), node.lineno)
    return found


def graph() -> Edges:
    """module -> the project modules it imports (with the line)."""
    files = modules()
    return {name: imports(path, set(files)) for name, path in files.items()}


def violations(edges: Edges) -> list[str]:
    return sorted(f"{src} imports {dst}" for src, dsts in edges.items() if src.split(".")[0] == "model"
                  for dst in dsts if dst.split(".")[0] == "ablate")


def cycles(edges: Edges) -> list[list[str]]:
    """Every group of modules that import each other (a strongly connected component), as the shortest circle
    through each of its modules (``[a, b, ..., a]``, each circle once)."""
    graph = nx.DiGraph([(src, dst) for src, dsts in edges.items() for dst in dsts])
    circles = {}
    for group in sorted(sorted(g) for g in nx.strongly_connected_components(graph)):
        if len(group) == 1 and not graph.has_edge(group[0], group[0]):
            continue
        inside = graph.subgraph(group)
        for start in group:
            back = min((nx.shortest_path(inside, after, start) for after in sorted(inside.successors(start))), key=len)
            circle = [start, *back][:-1]
            first = circle.index(min(circle))
            circles.setdefault(tuple(circle[first:] + circle[:first]), None)
    return [[*circle, circle[0]] for circle in circles]


def describe(edges: Edges, files: dict[str, Path], circle: list[str]) -> str:
    steps = [f"{files[src].relative_to(ROOT)}:{edges[src][dst]} imports {dst}" for src, dst in zip(circle, circle[1:])]
    return f"import circle {' -> '.join(circle)}:\n" + "\n".join(f"  {step}" for step in steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="module-level edges instead of package-level")
    edges, files = graph(), modules()
    if parser.parse_args().modules:
        for src, dsts in edges.items():
            print(f"{src} -> {', '.join(sorted(dsts)) or '(nothing of the project)'}")
    else:
        between = defaultdict(set)
        for src, dsts in edges.items():
            for dst in dsts:
                between[src.split(".")[0]].add(dst.split(".")[0])
        for package in PACKAGES:
            print(f"{package}/ imports {', '.join(f'{d}/' for d in sorted(between[package]))}")
    bad = violations(edges)
    print("\n".join(bad) if bad else "model/ imports nothing from ablate/")
    circles = cycles(edges)
    print("\n".join(describe(edges, files, c) for c in circles) if circles else "no import circle")
    return 1 if bad or circles else 0


if __name__ == "__main__":
    sys.exit(main())

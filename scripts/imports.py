"""The project's import graph, read from the source (every import, also those inside functions).

    .venv/bin/python scripts/imports.py            # package -> packages it imports, and the rule
    .venv/bin/python scripts/imports.py --modules  # module -> project modules it imports

Exits 1 if ``model/`` imports anything from ``ablate/``: the model is a library on its own.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "ablate")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (absolute imports; the project uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    return {module_name(p): imports(p) for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def violations(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{src} imports {dst}" for src, dsts in edges.items() if src.split(".")[0] == "model"
                  for dst in dsts if dst.split(".")[0] == "ablate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="module-level edges instead of package-level")
    edges = graph()
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
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Room sizes: print the longest classes and functions in sedamp/ and exit non-zero if
any passes the house limits (a class over 300 lines, a function over 60).

    python scripts/check_structure.py [--top N] [ROOT]

A declarative table (a module-level assignment, such as the JSON Schema) is not a class
or a function and is not counted. Lines are counted from the `def`/`class` line (its
decorators excluded) to the last line of the body, docstrings and comments included:
what a reader has to read."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def measure(root: Path) -> list[tuple[int, str, str, int]]:
    """(lines, kind, place, limit) for every class and function under `root`."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                kind, limit = "class", MAX_CLASS_LINES
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                kind, limit = "def", MAX_FUNCTION_LINES
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            rows.append((lines, kind, f"{path}:{node.lineno} {kind} {node.name}", limit))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="sedamp", type=Path)
    ap.add_argument("--top", type=int, default=10, help="how many of the longest of each kind to print")
    args = ap.parse_args(argv)
    rows = measure(args.root)
    over = [r for r in rows if r[0] > r[3]]
    for kind in ("class", "def"):
        longest = sorted((r for r in rows if r[1] == kind), reverse=True)[: args.top]
        print(f"longest {'classes' if kind == 'class' else 'functions'} (limit {longest[0][3] if longest else '-'}):")
        for lines, _, place, limit in longest:
            print(f"  {lines:5d}  {place}{'  OVER' if lines > limit else ''}")
    if over:
        limits = f"class {MAX_CLASS_LINES}, function {MAX_FUNCTION_LINES} lines"
        print(f"{len(over)} over the limits ({limits})", file=sys.stderr)
        return 1
    print("every class and function is within the limits")
    return 0


if __name__ == "__main__":
    sys.exit(main())

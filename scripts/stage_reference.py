"""Write docs/stages.md, the reference of every ready-made stage in stages/, from the
modules' own docstrings (so the reference cannot drift from the code).

    python scripts/stage_reference.py            # rewrite docs/stages.md
    python scripts/stage_reference.py --check    # exit 1 if docs/stages.md is stale

For each module: its docstring (event shapes), then each name in its ``__all__`` with
the parameters it takes (for a class, those of ``setup``) and its docstring. The YAML
name of a stage is ``stages.<module>:<name>``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "stages.md"

HEADER = """# Stage reference

Every ready-made stage in `stages/`, generated from the code by
`python scripts/stage_reference.py` (a test fails when this file is stale). In a
topology, name a stage `stages.<module>:<name>` and give its parameters under
`params:`. Sources yield events, handlers take one event and return one (None: none;
a generator or `sedamp.Many`: several), sinks take events and return nothing.
"""


def _params(obj: object) -> str:
    target = getattr(obj, "setup", None) if inspect.isclass(obj) else obj
    if target is None or not callable(target):
        return ""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return ""
    params = [p for p in sig.parameters.values() if p.name not in ("self", "event")]
    shown = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        shown.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return ", ".join(shown)


def _kind(obj: object) -> str:
    return "class" if inspect.isclass(obj) else "function"


def render() -> str:
    sys.path.insert(0, str(REPO))
    import stages

    parts = [HEADER]
    names = sorted(m.name for m in pkgutil.iter_modules(stages.__path__) if not m.name.startswith("_"))
    for name in names:
        mod = importlib.import_module(f"stages.{name}")
        parts.append(f"\n## `stages.{name}`\n\n{inspect.cleandoc(mod.__doc__ or '(no description)')}\n")
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if not callable(obj):
                continue
            doc = inspect.getdoc(obj) or "(no description)"
            if inspect.isclass(obj) and obj.__doc__ is None:
                doc = "(no description)"
            params = _params(obj)
            parts.append(f"\n### `stages.{name}:{attr}` ({_kind(obj)})\n")
            if params:
                parts.append(f"\nParameters: `{params}`\n")
            parts.append(f"\n{doc}\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/stages.md differs from the code")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(REPO)} is stale: run python scripts/stage_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A static guard: the runtime never deserializes code or evaluates strings, and imports
user code only from names in the topology file (sedamp.runtime.stage.load_ref)."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "sedamp"
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def test_no_pickle_eval_or_dynamic_import_outside_load_ref() -> None:
    found = []
    for path in sorted(RUNTIME.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [
                    f"{path.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{path.name}: from {node.module} import")
            elif isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in FORBIDDEN_CALLS and (isinstance(f, ast.Name) or name != "compile"):  # re.compile is fine
                    found.append(f"{path.name}:{node.lineno}: {name}()")
                if name == "import_module" and path.name != "stage.py":
                    found.append(f"{path.name}:{node.lineno}: import_module() outside stage.load_ref")
    assert found == []


def test_msgpack_is_unpacked_only_with_the_buffer_hook() -> None:
    """Decoding turns wire data into no object but plain data: no object_hook anywhere,
    and the one ext_hook is `payload.ext_hook`, which makes only bytes and NumPy arrays
    of dtypes without objects (its refusals are tested in test_payload.py)."""
    for path in sorted(RUNTIME.rglob("*.py")):
        text = path.read_text()
        assert "object_hook" not in text and "object_pairs_hook" not in text, path
        for line in text.splitlines():
            if "ext_hook=" in line:
                assert "ext_hook=hook" in line and path.name == "wire.py", (path, line)
    wire_text = (RUNTIME / "runtime" / "wire.py").read_text()
    assert wire_text.count("hook = payload.ext_hook(") == 2

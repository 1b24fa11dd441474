"""``${VAR}`` expansion in topology strings. Pure: the values come from the mapping given.

``${VAR}`` is replaced by VAR's value, ``${VAR:-default}`` by the default when VAR is unset
or empty (the default may use variables too), ``$$`` by a literal ``$``; any other ``$``
is kept. The loader expands every string of a topology file while parsing it and the
values of ``--set`` overrides; ``${TOPOLOGY_DIR}`` is the directory of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sedamp.spec.yamlmap import SubstitutionError

__all__ = ["expand_vars"]

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}`` (used when VAR is unset or empty) and ``$$``
    (a literal ``$``) in `value`. Any other ``$`` is kept as is.

    Raises `sedamp.spec.yamlmap.SubstitutionError` naming every variable that is missing."""
    out: list[str] = []
    missing: list[str] = []
    i = 0
    while True:
        j = value.find("$", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if value.startswith("$$", j):
            out.append("$")
            i = j + 2
        elif value.startswith("${", j):
            k = _closing_brace(value, j + 2)
            if k < 0:
                raise SubstitutionError(
                    f"unterminated '${{' in {value!r}", "close it with '}', or write $$ for a literal $"
                )
            body = value[j + 2 : k]
            name, sep, default = body.partition(":-")
            if not _VAR_NAME.match(name):
                raise SubstitutionError(
                    f"invalid variable reference '${{{body}}}' in {value!r}",
                    "write ${NAME} or ${NAME:-default}, or $$ for a literal $",
                )
            got = env.get(name)
            if got is None or (sep and got == ""):
                if sep:
                    got = expand_vars(default, env)  # a default may use variables too
                else:
                    missing.append(name)
                    got = ""
            out.append(got)
            i = k + 1
        else:
            out.append("$")
            i = j + 1
    if missing:
        names = ", ".join(repr(n) for n in dict.fromkeys(missing))
        verb = "is" if len(missing) == 1 else "are"
        plural = "" if len(missing) == 1 else "s"
        raise SubstitutionError(
            f"environment variable{plural} {names} {verb} not set",
            f"set {missing[0]} in the environment, or give a default: ${{{missing[0]}:-value}}",
        )
    return "".join(out)


def _closing_brace(value: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at `start` (nested
    ``${...}`` in a default are skipped), or -1."""
    depth = 0
    i = start
    while i < len(value):
        if value.startswith("${", i):
            depth += 1
            i += 2
            continue
        if value[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1

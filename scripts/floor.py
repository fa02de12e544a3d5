"""Print pip constraints pinning each runtime dependency to the lowest version its
specifier in pyproject.toml allows (`make test-floor` installs with them)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

LOWER = re.compile(r"(?:>=|~=|==)\s*([0-9][0-9A-Za-z.]*)")


def floor_constraints(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    lines = []
    for dep in deps:
        name = re.split(r"[\[<>=~!; ]", dep, maxsplit=1)[0]
        lowest = LOWER.search(dep)
        if lowest is None:
            sys.exit(f"{name}: no lower bound in pyproject.toml ({dep!r}); give it one")
        lines.append(f"{name}=={lowest.group(1)}")
    return lines


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print("\n".join(floor_constraints(root / "pyproject.toml")))

"""The package's layering: bin/ holds thin entry points only, and nothing imports them."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "espnet2_almtok"


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_module_outside_bin_imports_an_entry_point():
    offenders = [f"{path.relative_to(ROOT)} imports {name}"
                 for path in PACKAGE.rglob("*.py") if "bin" not in path.relative_to(PACKAGE).parts[:1]
                 for name in imported_modules(path) if name == "espnet2_almtok.bin" or name.startswith("espnet2_almtok.bin.")]
    assert not offenders, offenders


def test_entry_points_are_thin():
    long = {p.name: n for p in (PACKAGE / "bin").glob("*.py") if (n := len(p.read_text().splitlines())) > 120}
    assert not long, f"bin/ modules over 120 lines (move the library code out of bin/): {long}"

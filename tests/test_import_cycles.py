"""No import cycle among the modules of src/mtu (issue 13.3): `scripts/import_cycles.py` finds none. The script itself
is checked on a small package with cycles through a function-level relative import, an absolute import, and a
package whose __init__ runs when one of its modules is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_cycles.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_src_mtu_has_no_import_cycle():
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 import cycle(s)" in result.stdout


def test_the_script_finds_cycles_of_every_kind(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("def f():\n    from .sub import b  # function level\n    return b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from ..a import f\nimport json\n")
    (package / "c.py").write_text("import pkg.d\n")
    (package / "d.py").write_text("from pkg import c\n")
    (package / "e.py").write_text("from . import a\n")  # imports into the cycle, is not part of it
    (package / "h").mkdir()
    (package / "h" / "__init__.py").write_text("from ..g import x\n")
    (package / "h" / "k.py").write_text("")
    (package / "g.py").write_text("import pkg.h.k  # runs pkg/h/__init__ first, which imports g\nx = 1\n")
    result = _run(package)
    assert result.returncode == 1
    assert "import cycle among 2 modules: pkg.a, pkg.sub.b" in result.stdout
    assert "pkg.a (a.py:2) -> pkg.sub.b" in result.stdout and "pkg.sub.b (b.py:1) -> pkg.a" in result.stdout
    assert "import cycle among 2 modules: pkg.c, pkg.d" in result.stdout
    assert not any("pkg.e" in line for line in result.stdout.splitlines() if line.startswith("import cycle"))
    assert "import cycle among 2 modules: pkg.g, pkg.h" in result.stdout
    assert "3 import cycle(s)" in result.stdout

"""Every file the package reads at run time ships in its wheel, not only in a checkout.

An editable install reads the source tree, so a file missing from
``[tool.setuptools.package-data]`` goes unnoticed until someone installs a
wheel (the linux engine's C sources once did: its launcher could not be built).
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "pappus"


def _package_data() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns: list[str] = config["tool"]["setuptools"]["package-data"]["pappus"]
    return patterns


def test_every_file_that_is_not_python_is_package_data() -> None:
    patterns = _package_data()
    data_files = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*")
                  if path.is_file() and path.suffix not in (".py", ".pyc")
                  and "__pycache__" not in path.parts]
    assert "engines/linux/launcher.c" in data_files  # the walk sees what it must
    missing = [name for name in data_files
               if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"


def test_every_pattern_matches_a_file() -> None:
    for pattern in _package_data():
        assert list(PACKAGE.glob(pattern)), f"package-data pattern {pattern!r} matches nothing"

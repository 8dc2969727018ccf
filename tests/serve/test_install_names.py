"""The docs and messages install the distribution by its name in pyproject.toml (`rice` on PyPI is another
package): no `pip install rice[...]` anywhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_names_the_distribution():
    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1]  # tomllib is Python 3.11+
    name = re.search(r'^name\s*=\s*"([^"]+)"', project, re.M).group(1)
    assert name != "rice"
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "rice").rglob("*.py"))]
    commands = [(path, match.group(1)) for path in files
                for match in re.finditer(r"pip install ((?:-e )?['\"]?[\w.\-]*(?:\[[\w,]+\])?)", path.read_text())]
    ours = [(str(path.relative_to(ROOT)), what) for path, what in commands if name in what]
    assert len(ours) >= 5, ours
    wrong = [(str(path.relative_to(ROOT)), what) for path, what in commands
             if re.fullmatch(r"(-e )?['\"]?rice(\[[\w,]+\])?['\"]?", what)]  # `rice` on PyPI is not this package
    assert wrong == [], wrong

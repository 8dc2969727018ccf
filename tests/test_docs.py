"""The notebook-style example in docs/library.md runs as written."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_library_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "library.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS / "library.md"), "exec"), namespace)
    assert (tmp_path / "embeddings.npz").is_file() and (tmp_path / "runs" / "notebook" / "last.pt").is_file()

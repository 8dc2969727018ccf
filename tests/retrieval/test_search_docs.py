"""The Python example of docs/search.md runs as written."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_search_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "search.md").read_text(), re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS / "search.md"), "exec"), namespace)
    assert (tmp_path / "shop-index" / "index.json").is_file() and len(namespace["hits"]) == 3

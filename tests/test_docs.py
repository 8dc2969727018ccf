"""The notebook-style example in docs/library.md runs as written and prints what it says."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_library_example_runs_and_prints_its_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "library.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    printed = []
    for block in blocks:
        exec(compile(block, str(DOCS / "library.md"), "exec"), namespace)
        printed += [line for line in capsys.readouterr().out.splitlines() if line.strip() and "━" not in line]
    results = namespace["results"]
    # 1. print(results["R@1"], results["subsets"])
    assert printed[0] == f"{results['R@1']} {results['subsets']}"
    assert results["num_queries"] == 32 and set(results["subsets"]) <= {"hard", "regular"}
    assert results["R@1"] >= 3 * 100.0 / 32, results  # 50 steps of rice_tiny: well above chance
    # 2. print(float(clip @ shop)): a cosine of two unit vectors
    cosine = float(printed[1])
    assert -1.0 <= cosine <= 1.0 and abs(cosine - float(namespace["clip"] @ namespace["shop"])) < 1e-6
    # 3. the recall recomputed from embeddings.npz without rice equals rice's R@1
    assert abs(float(printed[2]) - results["R@1"]) < 1e-9, printed
    assert len(printed) == 3, printed

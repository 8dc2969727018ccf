"""`rice demo`'s chance row: the expected recall of a random ranking, against enumeration and the README."""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from rice.retrieval.evaluate import EmbeddingSet
from rice.train.demo import DEMO_DATA, chance_recall

README = Path(__file__).resolve().parents[1] / "README.md"


def _embedding_set(gallery_ids, query_gt):
    q, g = len(query_gt), len(gallery_ids)
    return EmbeddingSet(
        query_ids=[f"q{i}" for i in range(q)], query_embeddings=np.zeros((q, 4), np.float32), query_gt=query_gt,
        query_groups=[""] * q, query_sources=np.full(q, -1), query_ok=np.ones(q, bool),
        gallery_ids=list(gallery_ids), gallery_embeddings=np.zeros((g, 4), np.float32), gallery_groups=[""] * g,
    )  # fmt: skip


def test_chance_equals_the_mean_over_every_ordering_of_the_gallery():
    gallery = ["a", "b", "c", "d", "e", "f"]
    # one, two and three positives, a ground truth missing from the gallery, and one with none there at all
    query_gt = [["a"], ["b", "c"], ["a", "d", "f"], ["e", "zz"], ["zz"]]
    ks = [1, 2, 3, 5]
    expected = {f"R@{k}": 0.0 for k in ks}
    orders = list(itertools.permutations(gallery))
    for order in orders:
        for gt in query_gt:
            for k in ks:
                expected[f"R@{k}"] += any(item in gt for item in order[:k])
    expected = {key: 100.0 * value / (len(orders) * len(query_gt)) for key, value in expected.items()}
    got = chance_recall(_embedding_set(gallery, query_gt), ks)
    assert got == pytest.approx(expected, abs=1e-9)


def test_readme_chance_row_is_what_the_demo_computes():
    pattern = r"^\| chance \((\d+) shop images\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$"
    row = re.search(pattern, README.read_text(), re.M)
    assert row, "README.md lost the demo's chance row"
    size = int(row.group(1))
    assert size == DEMO_DATA["num_products"]  # one shop image per product, each clip has one
    gallery = [f"p{i}" for i in range(size)]
    got = chance_recall(_embedding_set(gallery, [[g] for g in gallery]), [1, 5, 10])
    assert [f"{got[k]:.1f}" for k in ("R@1", "R@5", "R@10")] == [row.group(2), row.group(3), row.group(4)]


def test_rice_demo_runs_end_to_end_and_its_rows_are_what_they_claim(tmp_path):
    """`rice demo` at a reduced budget: the command writes the three rows; the chance row is the formula's value
    for the demo's gallery, and the untrained row is the recall of the trained run's starting weights."""
    import json

    from typer.testing import CliRunner

    from rice.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--steps", "2"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(results) == {"trained", "untrained", "chance"}
    gallery_size = results["trained"]["gallery_size"]
    assert gallery_size == DEMO_DATA["num_products"]
    gallery = [f"p{i}" for i in range(gallery_size)]
    expected = chance_recall(_embedding_set(gallery, [[g] for g in gallery]), [1, 5, 10])
    for k in ("R@1", "R@5", "R@10"):
        assert results["chance"][k] == pytest.approx(expected[k], abs=1e-9)
        assert f"{results['trained'][k]:.1f}" in result.output
    # two steps move the weights: the trained row is measured on another model than the untrained one
    assert results["trained"] != results["untrained"]

"""benchmarks/scale.py runs at its smoke size (3,000 x 32 vectors) and reports well-formed rows; the figures of a
smoke run mean nothing. Its shard writer makes a folder the on-disk build accepts (the listing streams back)."""

import numpy as np
import pytest

from tests.benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def scale():
    with benchmark_module("scale") as module:
        yield module


def test_scale_benchmark_runs_at_smoke_size(scale):
    rows = scale.run(smoke=True)
    names = [r["name"] for r in rows]
    assert any(n.startswith("scale build peak RSS") for n in names) and any("on-disk vs in-memory" in n for n in names)
    for r in rows:
        assert {"name", "ours", "baseline", "ratio", "target", "met"} <= set(r), r


def test_the_mixture_shards_are_a_rice_embed_folder(scale, tmp_path):
    from rice.retrieval.shard_stream import ShardSource, iter_json_array

    scale.write_mixture_shards(tmp_path / "emb", 2500, 16, shard_rows=1000)
    assert ShardSource(tmp_path / "emb").count == 2500
    ids = list(iter_json_array(tmp_path / "emb" / "listing.json", "ids"))
    assert ids == [f"item{i:08d}" for i in range(2500)]
    assert list(iter_json_array(tmp_path / "emb" / "listing.json", "paths")) == [None] * 2500
    vectors = np.concatenate([np.load(tmp_path / "emb" / f"shard-{s:05d}.npy") for s in range(3)])
    assert vectors.shape == (2500, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    truth = scale.exact_truth(tmp_path / "emb", vectors[:5], k=3)
    assert list(truth[:, 0]) == [0, 1, 2, 3, 4]  # each vector is its own nearest neighbour

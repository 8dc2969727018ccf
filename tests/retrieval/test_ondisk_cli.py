"""`rice index build --from-embeddings DIR --memory-budget`, `rice index tune`, `rice index info` on an on-disk
index: thin wrappers, one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from rice.cli import app
from rice.retrieval.catalogue import Index
from rice.retrieval.ondisk import OnDiskIndex
from tests.retrieval.test_ondisk import mixture, write_shards

runner = CliRunner()


def test_build_tune_info_and_search_an_on_disk_index(tmp_path):
    vectors = mixture(1500, seed=0)
    write_shards(tmp_path / "emb", vectors)
    idx = tmp_path / "idx"
    built = runner.invoke(app, ["index", "build", "--from-embeddings", str(tmp_path / "emb"), "--out", str(idx),
                                "--memory-budget", "64M", "--index-type", "ivfpq", "--nlist", "8", "--nprobe", "1"])
    assert built.exit_code == 0, built.output
    assert "1500 items, ivfpq on disk" in built.output
    assert isinstance(Index.load(idx), OnDiskIndex)
    tuned = runner.invoke(app, ["index", "tune", str(idx), "--queries", "30"])
    assert tuned.exit_code == 0, tuned.output
    record = json.loads((idx / "index.json").read_text())["tune"]
    assert record["queries"] == 30 and f"nprobe {record['chosen']['nprobe']}" in tuned.output
    info = runner.invoke(app, ["index", "info", str(idx)])
    assert info.exit_code == 0, info.output
    flat = " ".join(info.output.split())
    assert "IVF-PQ" in flat and "tuned" in flat and "lists" in flat
    as_json = json.loads(runner.invoke(app, ["index", "info", str(idx), "--json"]).output)
    assert as_json["storage"] == "ondisk" and as_json["why"].startswith("1,500 vectors")
    assert Index.load(idx).search(vectors[:1], k=1)[0][0].id == "item0"


def test_bad_arguments_are_one_line_with_exit_code_2(tmp_path):
    write_shards(tmp_path / "emb", mixture(600, seed=1))
    for args, words in (
        (["--from-embeddings", str(tmp_path / "emb"), "--memory-budget", "lots"], "--memory-budget 'lots'"),
        (["--from-embeddings", str(tmp_path / "emb"), "--memory-budget", "64M", "--index-type", "hnsw"],
         "an on-disk index is one of"),
        (["--images", str(tmp_path), "x.pt", "--memory-budget", "4G"], "give --from-embeddings DIR"),
        (["--from-embeddings", str(tmp_path / "nothing"), "--memory-budget", "4G"], "no embeddings.json"),
    ):
        result = runner.invoke(app, ["index", "build", *args, "--out", str(tmp_path / "idx")])
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (args, result.output)
    flat_index = tmp_path / "flat"
    Index.from_embeddings(np.eye(4, dtype=np.float32), list("abcd"), index_type="flat").save(flat_index)
    result = runner.invoke(app, ["index", "tune", str(flat_index), "--queries", "2"])
    assert result.exit_code == 2 and "only IVF indexes are tuned" in result.output

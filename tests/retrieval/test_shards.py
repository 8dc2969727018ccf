"""Embedding shards pin the listing they were cut from: a changed catalogue between `rice embed --shard` runs, or
after them, is refused in one line naming the file, never merged silently; a killed run's temporary files go."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rice.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *says: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert all(s in result.output for s in says), result.output


@pytest.fixture()
def catalogue(shop_data, tmp_path) -> Path:
    folder = tmp_path / "cat"
    shutil.copytree(shop_data / "imgs", folder)
    return folder


def embed(checkpoint, catalogue, out, shard):
    return invoke("embed", checkpoint, catalogue, "--out", out, "--shard-size", "4", "--shard", shard, "--kind",
                  "image", "--device", "cpu")


def test_a_file_renamed_between_shard_runs_is_refused(untrained_checkpoint, catalogue, tmp_path):
    out = tmp_path / "emb"
    assert embed(untrained_checkpoint, catalogue, out, "0/2").exit_code == 0
    first = sorted(catalogue.iterdir())[0]
    first.rename(first.with_name("renamed.jpg"))
    one_line_error(embed(untrained_checkpoint, catalogue, out, "1/2"), "listing", first.stem)
    one_line_error(invoke("index", "build", "--from-embeddings", out, "--out", tmp_path / "idx"), "missing")


def test_a_file_changed_after_embedding_is_refused_at_merge(untrained_checkpoint, catalogue, tmp_path):
    out = tmp_path / "emb"
    for shard in ("0/2", "1/2"):
        assert embed(untrained_checkpoint, catalogue, out, shard).exit_code == 0
    changed = sorted(catalogue.iterdir())[5]
    Image.new("RGB", (32, 32), (200, 10, 10)).save(changed)  # redrawn: its stored vector is stale
    one_line_error(invoke("index", "build", "--from-embeddings", out, "--out", tmp_path / "idx"), changed.name,
                   "changed")
    assert not (tmp_path / "idx").exists()
    gone = sorted(catalogue.iterdir())[1]
    gone.unlink()
    one_line_error(invoke("index", "build", "--from-embeddings", out, "--out", tmp_path / "idx"), gone.name)


def test_a_killed_runs_temporary_files_are_removed_by_the_next_run(untrained_checkpoint, catalogue, tmp_path):
    out = tmp_path / "emb"
    assert embed(untrained_checkpoint, catalogue, out, "0/2").exit_code == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its id now names no process: a run killed while writing
    np.save(out / "partial.npy", np.zeros(3))
    leftovers = [out / f".shard-00001.npy.tmp-{child.pid}", out / f".embeddings.json.tmp-{child.pid}"]
    for path in leftovers:
        shutil.copy(out / "partial.npy", path)
    mine = out / f".shard-00003.npy.tmp-{os.getpid()}"  # a live process's file is not touched
    mine.write_bytes(b"")
    assert embed(untrained_checkpoint, catalogue, out, "1/2").exit_code == 0
    assert not any(p.exists() for p in leftovers) and mine.exists()
    assert invoke("index", "build", "--from-embeddings", out, "--out", tmp_path / "idx").exit_code == 0

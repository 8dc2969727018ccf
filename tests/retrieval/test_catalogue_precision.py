"""A catalogue embedded at a chosen precision (`rice index build|embed --precision`): its vectors are the model's
under that autocast, the precision is recorded with the model, and additions (add, sync) keep it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from rice.cli import app
from rice.data.model_input import eval_transform
from rice.models.loading import load
from rice.retrieval.catalogue import Index
from rice.retrieval.index_folder import IndexFileError

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def reference(model, paths: list[Path], dtype: torch.dtype | None) -> np.ndarray:
    """The model's (L2-normalised) image embeddings computed here, under ``dtype`` autocast (None: fp32)."""
    transform = eval_transform(model.preprocess)
    pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model.encode_image(pixels).float().numpy()


@pytest.fixture(scope="module")
def images(shop_data) -> list[Path]:
    return sorted((shop_data / "imgs").iterdir())


def test_a_bf16_catalogue_holds_bf16_vectors_and_its_additions_stay_bf16(untrained_checkpoint, images, tmp_path):
    model = load(untrained_checkpoint)
    first, later = images[:8], images[8:]
    index = Index.build(model, first, precision="bf16")
    assert index.model_info["precision"] == "bf16"
    expected, fp32 = reference(model, first, torch.bfloat16), reference(model, first, None)
    np.testing.assert_allclose(np.asarray(index.embeddings), expected, atol=1e-6)
    assert np.abs(expected - fp32).max() > 1e-4  # bf16 vectors are not the fp32 ones: the check above can fail
    index.save(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["model"]["precision"] == "bf16"

    reopened = Index.load(tmp_path / "idx", model=model)
    reopened.add(later[:2])  # no precision given: the recorded one
    np.testing.assert_allclose(np.asarray(reopened.embeddings)[-2:], reference(model, later[:2], torch.bfloat16),
                               atol=1e-6)  # fmt: skip
    reopened.save(tmp_path / "idx")

    # sync embeds new files at the recorded precision too
    from rice.retrieval.jobs import sync_from_inputs

    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    for path in [*first, later[2]]:
        shutil.copy(path, catalogue / path.name)
    Index.build(model, sorted(catalogue.iterdir()), precision="bf16").save(tmp_path / "synced")
    shutil.copy(later[3], catalogue / later[3].name)
    report = sync_from_inputs(tmp_path / "synced", model, [catalogue])
    assert report.added == 1
    synced = Index.load(tmp_path / "synced")
    row = synced.ids.index(later[3].stem)
    np.testing.assert_allclose(np.asarray(synced.embeddings)[row], reference(model, [later[3]], torch.bfloat16)[0],
                               atol=1e-6)  # fmt: skip


def test_the_default_on_a_cpu_is_fp32_and_is_recorded(untrained_checkpoint, images):
    model = load(untrained_checkpoint)
    index = Index.build(model, images[:4])
    assert index.model_info["precision"] == "fp32"
    np.testing.assert_allclose(np.asarray(index.embeddings), reference(model, images[:4], None), atol=1e-6)


def test_cli_precision_of_index_build_and_embed(untrained_checkpoint, shop_data, tmp_path):
    images = shop_data / "imgs"
    built = invoke("index", "build", untrained_checkpoint, "--images", images, "--out", tmp_path / "idx",
                   "--device", "cpu", "--precision", "bf16")  # fmt: skip
    assert built.exit_code == 0, built.output
    assert Index.load(tmp_path / "idx").model_info["precision"] == "bf16"
    bad = invoke("index", "build", untrained_checkpoint, "--images", images, "--out", tmp_path / "x",
                 "--precision", "fp16")  # fmt: skip
    assert bad.exit_code == 2 and "--precision fp16: choose from auto, fp32, bf16" in bad.output
    assert len(bad.output.strip().splitlines()) == 1

    shards = tmp_path / "emb"
    assert invoke("embed", untrained_checkpoint, images, "--out", shards, "--kind", "image", "--device", "cpu",
                  "--precision", "bf16").exit_code == 0  # fmt: skip
    # a resumed run at another precision would mix two kinds of vectors in one folder
    mixed = invoke("embed", untrained_checkpoint, images, "--out", shards, "--kind", "image", "--device", "cpu",
                   "--precision", "fp32")  # fmt: skip
    assert mixed.exit_code == 2 and "precision bf16" in " ".join(mixed.output.split())
    merged = invoke("index", "build", "--from-embeddings", shards, "--out", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    assert Index.load(tmp_path / "merged").model_info["precision"] == "bf16"
    np.testing.assert_allclose(np.asarray(Index.load(tmp_path / "merged").embeddings),
                               np.asarray(Index.load(tmp_path / "idx").embeddings), atol=1e-6)  # fmt: skip
    both = invoke("index", "build", "--from-embeddings", shards, "--out", tmp_path / "y", "--precision", "bf16")
    assert both.exit_code == 2 and "--precision applies to --images" in both.output


def test_an_index_recording_another_precision_is_refused(untrained_checkpoint, images, tmp_path):
    Index.build(load(untrained_checkpoint), images[:3]).save(tmp_path / "idx")
    meta_file = tmp_path / "idx" / "index.json"
    meta = json.loads(meta_file.read_text())
    meta["model"]["precision"] = "fp64"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="model precision 'fp64' is not fp32 or bf16"):
        Index.load(tmp_path / "idx")

"""The commands no other test runs end to end: `models`, `convert`, `prepare`, `eval --root/--split`."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rice.cli import app
from rice.config import build_config
from rice.models import build_model, create_model, list_models
from rice.train.checkpoint import save_checkpoint
from rice.train.optim import build_optimizer, build_scheduler

WIDE = {"COLUMNS": "200"}  # rich tables must not wrap or truncate


def _rows(output: str) -> dict[str, list[str]]:
    """A rich table's body rows keyed by their first cell."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        if len(cells) > 2 and cells[1]:
            rows[cells[1]] = cells[2:-1]
    return rows


def test_models_lists_every_registered_model_with_its_size():
    result = CliRunner().invoke(app, ["models"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert set(list_models()) <= set(rows)
    for name in ("rice_tiny", "swin_b_tiny", "timesformer_tiny", "fashionnet_tiny"):  # cheap to build here
        model = create_model(name, pretrained=False)
        params, input_size, embed_dim = rows[name][:3]
        assert float(params) == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=0.005), name
        assert int(input_size) == model.preprocess.input_size and int(embed_dim) == model.embed_dim, name
    assert rows["rice_vit_b32"][1:3] == ["224", "512"]
    assert float(rows["rice_vit_b32"][0]) == pytest.approx(87.85, abs=0.01)  # CLIP ViT-B/32 visual tower


def _checkpoint(tmp_path, root):
    cfg = build_config(model__name="rice_tiny", model__pretrained=False, data__root=str(root), data__workers=0,
                       data__num_frames=2)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg.optim, 5),
                    scaler=None, step=0, epoch=0, config=cfg)  # fmt: skip
    return path


def _recall_from_npz(path, k: int) -> float:
    """Brute-force recall@k from the saved embeddings, with no rice code involved."""
    z = np.load(path)
    scores = z["query_embeddings"] @ z["gallery_embeddings"].T
    gt = json.loads(str(z["query_gt_json"]))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return 100.0 * np.mean([any(z["gallery_ids"][j] in g for j in row) for row, g in zip(top, gt)])


def test_eval_root_and_split(synthetic_root, tmp_path):
    """--root points the checkpoint at another copy of the data, --split at another annotation file."""
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    for split, keep in (("train", 5), ("test", 7)):
        records = json.loads((other / f"{split}.json").read_text())
        (other / f"{split}.json").write_text(json.dumps(dict(list(records.items())[:keep])))
    ckpt = _checkpoint(tmp_path, synthetic_root)
    runner = CliRunner()
    for args, queries in (([], 12), (["--root", str(other)], 7), (["--root", str(other), "--split", "train"], 5)):
        out = tmp_path / f"r{queries}.json"
        emb = tmp_path / f"e{queries}.npz"
        result = runner.invoke(app, ["eval", str(ckpt), *args, "--json", str(out), "--save-embeddings", str(emb)])
        assert result.exit_code == 0, result.output
        recall = json.loads(out.read_text())
        assert recall["num_queries"] == queries and recall["gallery_size"] == queries, (args, recall)
        for k in (1, 3):
            assert recall[f"R@{k}"] == pytest.approx(_recall_from_npz(emb, k)), (args, k)
    result = runner.invoke(app, ["eval", str(ckpt), "--root", str(other), "--split", "val"])
    assert result.exit_code == 2 and "val" in result.output, result.output


def test_convert_writes_a_native_checkpoint_and_fails_in_one_line(tmp_path):
    from tests.models.test_official import _table_shapes

    g = torch.Generator().manual_seed(0)
    state = {key: torch.zeros(shape) for key, shape in _table_shapes("a").items()}
    probe = "image_encoder.model.transformer.resblocks.11.mlp.c_fc.weight"
    state[probe] = torch.randn(state[probe].shape, generator=g)
    state["transformer.contrastive_norm.norm_s"] = torch.tensor([3.5])
    source = tmp_path / "rice_final.pth"
    torch.save(state, source)
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "native.pt")])
    assert result.exit_code == 0, result.output
    native = torch.load(tmp_path / "native.pt", map_location="cpu", weights_only=True)
    assert native["format"] == "rice-checkpoint" and native["config"]["model"]["name"] == "rice_vit_b32"
    matches = [v for v in native["model"].values() if v.shape == state[probe].shape and torch.equal(v, state[probe])]
    assert len(matches) == 1  # the probe tensor arrives unchanged, once
    del native, state

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pth"
    torch.save({"foo.weight": torch.zeros(2)}, foreign)
    for bad in (garbage, foreign, tmp_path / "missing.pth"):
        result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out.pt")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and bad.name in lines[0], result.output
    assert not (tmp_path / "out.pt").exists()


def test_prepare_movingfashion_through_the_cli(tmp_path):
    from rice.data import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "mf", num_products=2, videos_per_product=1, frames=6, size=32, fps=2)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "movingfashion", "--root", str(root), "--workers", "1"])
    assert result.exit_code == 0, result.output
    videos = sorted((root / "videos").glob("*.mp4"))
    done = sorted(p.parent.name for p in (root / "frames").glob("*/.done"))
    assert done == sorted(v.stem for v in videos)
    for video in videos:  # 6 frames at 2 fps: 3 s of video, one frame per second
        assert len(list((root / "frames" / video.stem).glob("*.jpg"))) == 3, video
    again = runner.invoke(app, ["prepare", "movingfashion", "--root", str(root), "--workers", "1"])
    assert again.exit_code == 0, again.output

    result = runner.invoke(app, ["prepare", "lpr4m", "--root", str(root)])
    assert result.exit_code == 2 and "lpr4m" in result.output and "lpr750k" in result.output
    result = runner.invoke(app, ["prepare", "movingfashion"], env={"RICE_DATA": ""})
    assert result.exit_code == 2 and "--root" in result.output and "RICE_DATA" in result.output

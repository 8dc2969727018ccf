"""`rice export`: safetensors + config.json + model card; `rice.load(DIR)`, `rice.load("hf-hub:ORG/NAME")` (offline,
from a pre-filled cache in a temporary HF_HOME) and `rice eval DIR` give what the checkpoint gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import rice
from rice.cli import app
from rice.config import build_config
from rice.models import build_model
from rice.models.export_writer import export_model

pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A native checkpoint of rice_tiny with the PMD decoder (random weights), and an eval.json beside it."""
    run = tmp_path_factory.mktemp("run")
    cfg = build_config(model__name="rice_tiny", loss__losses=["icl", "pmd"], data__workers=0)
    torch.manual_seed(0)
    model = build_model(cfg.model, with_decoder=True)
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": cfg.to_dict(), "step": 7},
               run / "last.pt")
    (run / "eval.json").write_text(json.dumps({"num_queries": 12, "gallery_size": 12, "R@1": 41.5, "R@5": 80.0}))
    return run / "last.pt"


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    return torch.randn(3, 3, 64, 64, generator=g), torch.randn(2, 4, 3, 64, 64, generator=g), mask


def _embeddings(model) -> tuple[torch.Tensor, torch.Tensor]:
    images, frames, mask = _inputs()
    with torch.no_grad():
        return model.encode_image(images), model.encode_video(frames, mask)


def test_export_round_trip_gives_the_same_embeddings(checkpoint, tmp_path):
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(checkpoint), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "rice-export" and meta["model"] == "rice_tiny" and meta["decoder"] is True
    card = (out / "README.md").read_text()
    assert "| all | 41.50 | 80.00 |" in card and "icl" in card.lower()  # the eval table found beside the checkpoint
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    native = torch.load(checkpoint, weights_only=True)["model"]
    assert weights.keys() == native.keys() and all(torch.equal(weights[k], native[k]) for k in native)

    original, exported = rice.load(checkpoint), rice.load(out)
    assert exported.config == original.config and exported.decoder is not None
    for a, b in zip(_embeddings(original), _embeddings(exported)):
        assert torch.equal(a, b)


def test_a_run_directory_stands_for_its_last_checkpoint(checkpoint, tmp_path):
    run = checkpoint.parent
    for a, b in zip(_embeddings(rice.load(checkpoint)), _embeddings(rice.load(run))):
        assert torch.equal(a, b)
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(run), str(out)])
    assert result.exit_code == 0, result.output
    assert "| all | 41.50 | 80.00 |" in (out / "README.md").read_text()  # eval.json found in the run directory
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = runner.invoke(app, ["eval", str(empty)])
    assert result.exit_code != 0 and "without last.pt" in result.output and len(result.output.splitlines()) == 1


def _fill_hub_cache(hf_home: Path, repo: str, export_dir: Path) -> None:
    """The Hugging Face cache layout: hub/models--ORG--NAME/{refs/main, snapshots/<commit>/<files>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    shutil.copytree(export_dir, cache / "snapshots" / commit)


def test_hub_load_offline_from_a_prefilled_cache(checkpoint, tmp_path):
    export_dir = tmp_path / "export"
    export_model(checkpoint, export_dir)
    hf_home = tmp_path / "hf_home"
    _fill_hub_cache(hf_home, "some-org/rice-tiny-demo", export_dir)
    reference = tmp_path / "reference.pt"
    torch.save({"inputs": _inputs(), "expected": _embeddings(rice.load(checkpoint))}, reference)
    # A fresh process, as a user's: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported.
    script = (
        "import sys, torch, rice\n"
        # the parent's intra-op threads: a conv sums in a thread-dependent order, and the check is bit-exact
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "model = rice.load('hf-hub:some-org/rice-tiny-demo')\n"
        "ref = torch.load(sys.argv[1])\n"
        "images, frames, mask = ref['inputs']\n"
        "with torch.no_grad():\n"
        "    got = model.encode_image(images), model.encode_video(frames, mask)\n"
        "assert all(torch.equal(a, b) for a, b in zip(got, ref['expected'])), 'embeddings differ'\n"
        "try:\n"
        "    rice.load('hf-hub:some-org/not-in-the-cache')\n"
        "except FileNotFoundError as err:\n"
        "    assert 'hf-hub:some-org/not-in-the-cache' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('a repository missing from the cache must not load')\n"
    )
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # they would win over HF_HOME
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", script, str(reference)], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_eval_takes_an_export_folder(checkpoint, synthetic_root, tmp_path):
    out = tmp_path / "export"
    export_model(checkpoint, out)
    results = []
    for source in (checkpoint, out):
        json_out = tmp_path / f"{source.name}.json"
        result = runner.invoke(app, ["eval", str(source), "--root", str(synthetic_root), "--workers", "0",
                                     "--json", str(json_out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        results.append(json.loads(json_out.read_text()))
    assert results[0]["R@1"] == results[1]["R@1"] and results[0]["num_queries"] == results[1]["num_queries"] > 0

"""Hostile or broken shared models: every size in an export's ``config.json`` (or a checkpoint's stored config) is
checked against bounds before anything is built, and a truncated, forged or mismatched ``model.safetensors`` or a
non-object ``config.json`` is one line naming the file (CLI: exit 2, no traceback), never gigabytes allocated."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import rice
from rice.cli import app
from rice.config import build_config
from rice.models import build_model
from rice.models.export import CONFIG_FILE, WEIGHTS_FILE
from rice.models.export_writer import export_model

pytest.importorskip("safetensors")

runner = CliRunner()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A good export of rice_tiny (random weights): each test copies it and breaks one thing."""
    work = tmp_path_factory.mktemp("hostile_export")
    cfg = build_config(model__name="rice_tiny", data__workers=0)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": cfg.to_dict(), "step": 1},
               work / "last.pt")
    return export_model(work / "last.pt", work / "export")


def _copy(export_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    out.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (out / name).write_bytes((export_dir / name).read_bytes())
    return out


def _set_config(folder: Path, dotted: str, value) -> None:  # noqa: ANN001
    meta = json.loads((folder / CONFIG_FILE).read_text())
    node = meta["config"]
    *sections, key = dotted.split(".")
    for section in sections:
        node = node[section]
    node[key] = value
    (folder / CONFIG_FILE).write_text(json.dumps(meta))


def _one_line_failure(folder: Path, *needles: str) -> None:
    """rice.load raises one ValueError line naming the file, and `rice eval` exits 2 with that line."""
    with pytest.raises(ValueError) as caught:
        rice.load(folder)
    message = str(caught.value)
    assert "\n" not in message and all(needle in message for needle in needles), message
    result = runner.invoke(app, ["eval", str(folder), "--root", str(folder)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert all(needle in result.output for needle in needles), result.output


def test_the_untouched_export_loads(export_dir):
    assert rice.load(export_dir).config.model.name == "rice_tiny"


@pytest.mark.parametrize(("dotted", "value"), [
    ("data.image_size", 10**6),
    ("data.resize_size", 10**6),
    ("data.num_frames", 10**8),
    ("eval.num_frames", 10**8),
    ("eval.batch_size", 10**9),
    ("eval.ks", [1, 10**9]),
    ("eval.rerank", 10**9),
    ("model.decoder_heads", 10**6),
    ("loss.pmd_negatives", 10**9),
])  # fmt: skip
def test_a_size_beyond_its_bound_is_refused_at_load(export_dir, tmp_path, dotted, value):
    folder = _copy(export_dir, tmp_path)
    _set_config(folder, dotted, value)
    _one_line_failure(folder, CONFIG_FILE, dotted)


def test_the_bounds_hold_for_yaml_and_set_too():
    with pytest.raises(ValueError, match="data.image_size"):
        build_config(overrides=["data.image_size=1000000"])
    with pytest.raises(ValueError, match="data.num_frames"):
        build_config(overrides=["data.num_frames=100000000"])


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"a string"', "null", "{not json", ""])
def test_a_config_json_that_is_not_an_object_is_one_line(export_dir, tmp_path, text):
    folder = _copy(export_dir, tmp_path)
    (folder / CONFIG_FILE).write_text(text)
    _one_line_failure(folder, CONFIG_FILE)


def test_a_config_whose_config_section_is_not_an_object_is_one_line(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    without_config = {key: value for key, value in meta.items() if key != "config"}
    for broken in ({**meta, "config": [1]}, {**meta, "decoder": "yes"}, without_config):
        (folder / CONFIG_FILE).write_text(json.dumps(broken))
        _one_line_failure(folder, CONFIG_FILE)


def test_a_truncated_safetensors_is_one_line(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    _one_line_failure(folder, WEIGHTS_FILE)


def test_random_bytes_as_safetensors_are_one_line(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    (folder / WEIGHTS_FILE).write_bytes(bytes(range(256)) * 40)
    _one_line_failure(folder, WEIGHTS_FILE)


def _forged_safetensors(path: Path, tensors: dict[str, list[int]], payload: int) -> None:
    """A safetensors file whose header declares ``tensors`` (name -> shape, float32) over ``payload`` bytes."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * payload)


def test_a_header_declaring_a_huge_tensor_allocates_nothing(export_dir, tmp_path):
    folder = _copy(export_dir, tmp_path)
    model = rice.load(export_dir)
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    first = next(iter(shapes))
    shapes[first] = [10**6, 10**6]  # 4 TB declared, 64 bytes present
    _forged_safetensors(folder / WEIGHTS_FILE, shapes, payload=64)
    _one_line_failure(folder, WEIGHTS_FILE)


def test_weights_of_another_shape_are_one_line(export_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(export_dir, tmp_path)
    weights = load_file(str(folder / WEIGHTS_FILE))
    name = next(iter(weights))
    weights[name] = torch.zeros(3, 5)
    save_file(weights, str(folder / WEIGHTS_FILE))
    _one_line_failure(folder, WEIGHTS_FILE, name)
    del weights[name]
    save_file(weights, str(folder / WEIGHTS_FILE))
    _one_line_failure(folder, WEIGHTS_FILE, name)


def test_a_native_checkpoint_with_a_hostile_config_is_one_line(export_dir, tmp_path):
    model = rice.load(export_dir)
    cfg = model.config.to_dict()
    cfg["data"]["num_frames"] = 10**8
    path = tmp_path / "hostile.pt"
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": cfg, "step": 1}, path)
    _one_line_failure(path, "hostile.pt", "data.num_frames")
    torch.save({"format": "rice-checkpoint", "model": model.state_dict(), "config": [1, 2], "step": 1}, path)
    _one_line_failure(path, "hostile.pt")

"""`rice.load` maps the checkpoint file instead of reading it (only the tensors used are read; a training
checkpoint's optimizer state never is): the model must hold the same weights as a plain read, none of them backed by
the file, and files in torch's legacy format (which cannot be mapped) must still load."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import torch

from rice.models.checkpoint_file import read_checkpoint
from rice.models.loading import load


def _plain_weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_a_mapped_load_gives_the_weights_of_a_plain_read(tiny_checkpoint, tmp_path):
    checkpoint = tmp_path / "last.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    expected = _plain_weights(checkpoint)
    assert "optimizer" in read_checkpoint(checkpoint, mmap=True)  # a training checkpoint: the state is all there
    model = load(checkpoint)
    state = model.state_dict()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_the_loaded_model_holds_no_view_of_the_file(tiny_checkpoint, tmp_path):
    """Truncate the file after loading, then read every weight: a weight still mapped from the file would raise
    SIGBUS (a child process, so that the test run survives it)."""
    checkpoint = tmp_path / "last.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    expected = sum(float(t.double().sum()) for t in _plain_weights(checkpoint).values() if t.is_floating_point())
    script = textwrap.dedent(f"""
        import os, sys
        from rice.models.loading import load
        model = load({str(checkpoint)!r})
        os.truncate({str(checkpoint)!r}, 0)
        total = sum(float(t.double().sum()) for t in model.state_dict().values() if t.is_floating_point())
        print(repr(total))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert float(done.stdout.strip().splitlines()[-1]) == expected


def test_a_checkpoint_in_torch_s_legacy_format_still_loads(tiny_checkpoint, tmp_path):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    model = load(legacy)
    for name, tensor in state["model"].items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_a_model_built_for_its_weights_computes_what_the_saved_model_computed():
    """`build_for_weights` skips the random initialisation (meta device, uninitialised storage) that the weights
    overwrite; a model whose buffers are computed at construction rather than stored (Swin's relative position index)
    is built the ordinary way. Loaded with the saved model's state dict, each must give its outputs exactly."""
    from rice.config import ModelConfig
    from rice.models import build_for_weights, build_model

    for name in ("rice_tiny", "swin_b_tiny", "timesformer_tiny", "fashionnet_tiny"):
        torch.manual_seed(0)
        cfg = ModelConfig(name=name, pretrained=False)
        saved = build_model(cfg, with_decoder=name == "rice_tiny").eval()
        loaded = build_for_weights(cfg, with_decoder=name == "rice_tiny")
        assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()]), name
        loaded.load_state_dict(saved.state_dict(), strict=True)
        loaded.eval()
        size = saved.preprocess.input_size
        images, clips = torch.randn(2, 3, size, size), torch.randn(2, 4, 3, size, size)
        mask = torch.tensor([[True] * 4, [True, True, False, False]])
        with torch.no_grad():
            assert torch.equal(loaded.encode_image(images), saved.encode_image(images)), name
            assert torch.equal(loaded.encode_video(clips, mask), saved.encode_video(clips, mask)), name

"""bf16 inference for the scan: where `auto` picks it, the matrix weights stored in bf16 (the same outputs under
autocast in half the memory), and windows that follow the fp32 ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rice.models import create_model
from rice.models.precision import cpu_has_native_bf16, inference_dtype, store_matrix_weights

REPO = Path(__file__).resolve().parents[2]


def test_auto_is_bf16_where_the_hardware_multiplies_it():
    assert inference_dtype("fp32", "cpu") is None and inference_dtype("bf16", "cpu") is torch.bfloat16
    assert inference_dtype("auto", "cuda") is torch.bfloat16
    assert inference_dtype("auto", "cpu") is (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(ValueError, match="choose from auto, fp32, bf16"):
        inference_dtype("fp16", "cpu")


@pytest.mark.parametrize("name", ["rice_tiny", "rice_vit_b32"])
def test_matrix_weights_in_bf16_give_autocasts_outputs_bit_for_bit(name):
    """A CNN with batch norm and the CLIP ViT-B/32 that `rice scan` runs: stored in bf16, the Linear/Conv weights
    give exactly what autocast gives with fp32 weights, the norms and embeddings keep fp32, and the freed bytes are
    half the matrices'."""
    torch.manual_seed(0)
    model = create_model(name, pretrained=False).eval()
    size = model.preprocess.input_size
    pixels = torch.randn(2, 3, size, size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    with torch.no_grad(), autocast:
        reference = model.encoder(pixels).embedding.float()
    matrices = [p for m in model.encoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                for p in m.parameters(recurse=False)]  # fmt: skip
    others = {n: p.dtype for n, p in model.encoder.named_parameters() if not any(p is q for q in matrices)}
    freed = store_matrix_weights(model.encoder, torch.bfloat16)
    assert freed == sum(p.numel() for p in matrices) * 2 > 0
    assert all(p.dtype == torch.bfloat16 for p in matrices)
    assert others and all(dict(model.encoder.named_parameters())[n].dtype == d for n, d in others.items())
    with torch.no_grad(), autocast:
        stored = model.encoder(pixels).embedding.float()
    torch.testing.assert_close(stored, reference, rtol=0, atol=0)


def test_a_bf16_scan_follows_the_fp32_scan_and_says_which_it_ran(scan_setup):
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index
    from rice.scanning import WindowResult, scan

    model = load(scan_setup.checkpoint)
    index = Index.load(scan_setup.index_dir, model=model)
    runs = {p: scan(model, index, scan_setup.recording, window=2.0, stride=1.0, precision=p) for p in ("fp32", "bf16")}
    windows = {p: [w for w in run if isinstance(w, WindowResult)] for p, run in runs.items()}
    assert {p: run.timeline.settings["precision"] for p, run in runs.items()} == {"fp32": "fp32", "bf16": "bf16"}
    a, b = (np.stack([w.embedding for w in windows[p]]) for p in ("fp32", "bf16"))
    assert a.shape == b.shape and a.shape[0] == 13
    assert np.abs(a - b).max() > 1e-6  # bf16 did run: the vectors differ in their last bits ...
    assert (a * b).sum(1).min() > 0.999  # ... and only there (both unit vectors)
    # the caller's model is left in fp32 (rice.scan does not store its weights in bf16)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_cli_runs_bf16_on_its_own_bf16_weights_and_refuses_an_unknown_precision(scan_setup, tmp_path):
    def rice(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rice", "scan", str(scan_setup.index_dir),
                               str(scan_setup.recording), "--window", "2", "--device", "cpu", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    bad = rice("--precision", "fp16")
    assert bad.returncode == 2 and "--precision fp16: choose from auto, fp32, bf16" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    scores = {}
    for precision in ("fp32", "bf16"):
        result = rice("--precision", precision, "--json", str(tmp_path / f"{precision}.json"))
        assert result.returncode == 0, result.stderr[-2000:]
        timeline = json.loads((tmp_path / f"{precision}.json").read_text())
        assert timeline["settings"]["precision"] == precision
        scores[precision] = np.array([w["results"][0]["score"] for w in timeline["windows"]])
    assert scores["fp32"].shape == scores["bf16"].shape and len(scores["fp32"]) > 0
    np.testing.assert_allclose(scores["bf16"], scores["fp32"], atol=2e-2)
    assert not np.array_equal(scores["bf16"], scores["fp32"])


def test_bf16_batches_have_few_shapes_full_for_a_file_and_padded_to_a_multiple_of_4(scan_setup):
    """oneDNN keeps a kernel per input shape under bf16: a file is encoded in full batches (the last one padded),
    and a live source's ragged batch of 3 frames runs as 4, only the 3 real frames kept."""
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index
    from rice.scanning import scan
    from rice.scanning.source import SampledFrame

    model = load(scan_setup.checkpoint)
    index = Index.load(scan_setup.index_dir, model=model)
    sizes: list[int] = []
    hook = model.encoder.register_forward_pre_hook(lambda _module, args: sizes.append(args[0].shape[0]))
    try:
        run = scan(model, index, scan_setup.recording, window=0.5, stride=1.0, precision="bf16")
        run.run()  # 14 s on a 0.25-s grid: 56 frames
        assert sizes == [16, 16, 16, 8]
        sizes.clear()
        embeddings: dict = {}
        frames = [SampledFrame(j, (j + 0.5) * run.dt, scan_setup.frames[8 * j]) for j in range(3)]
        run._encode(frames, embeddings, {}, {})
        assert sizes == [4] and sorted(embeddings) == [0, 1, 2]
    finally:
        hook.remove()

"""Regional compilation, frame buckets and the compile settings (issue 24, items 3 and 4).

1. `compile_regions` compiles each encoder block and the decoder's blocks in place, not the whole encoder; the
   blocks of a tower share one trace; parameter names and checkpoint keys do not change; an encoder without
   blocks is compiled whole. A compiled training step (``aot_eager``: Dynamo's capture and AOT autograd, no C++
   compiler) gives the eager step's losses and gradients.
2. Frame buckets: the loader pads the real frames' positions to a bucket with padded frames' positions; the model
   runs them and zeroes their outputs, so embeddings, tokens, losses and gradients equal the unbucketed step even
   when the padded frames hold noise. Two batches with different frame counts in one bucket compile once.
3. `train.cuda_graphs` is refused with a one-line error where it cannot work (here: the CPU).

The persistent cache (`train.compile_cache`) is tested in tests/train/test_compile_cache.py (inductor, slow).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch._dynamo
import torch.nn as nn

from rice.config import LossConfig
from rice.data import collate_batch, pad_clip
from rice.models import RiceModel, create_model
from rice.models.decoder import build_decoder
from rice.models.encoders import EncoderOutput, ImageEncoder, Preprocess
from rice.train.compile import check_compile_settings, compile_regions, repeated_blocks, resolve_frame_buckets
from rice.train.engine import fit
from rice.train.task import RiceTask
from tests.train.test_training_behaviour import run_config

FRAMES = 3
CLIP_LENGTHS = (3, 2, 1, 3, 2)  # 11 real frames of 15: tail-dropped and short clips, zero-padded by pad_clip


def tiny_vit_task() -> RiceTask:
    """A two-block timm ViT tower (the rice_dfn_b16 variant, built small): LayerNorm only, so each frame's output
    depends on that frame alone, which bucketing needs."""
    torch.manual_seed(0)
    model = create_model("rice_dfn_b16", pretrained=False, img_size=32, depth=2, embed_dim=64, num_heads=4)
    model.decoder = build_decoder(model.encoder, heads=4, reconstruction=True)
    return RiceTask(model, LossConfig(losses=["icl", "pmd", "pfr"], pmd_negatives=3)).train()


def tiny_batch(size: int, lengths=CLIP_LENGTHS, frame_buckets: int = 0, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    items = []
    for length in lengths:
        frames, mask = pad_clip(torch.randn(length, 3, size, size, generator=gen), FRAMES)
        items.append({"frames": frames, "frame_mask": mask, "image": torch.randn(3, size, size, generator=gen)})
    return collate_batch(items, frame_buckets=frame_buckets)


def run_step(task: RiceTask, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(5)  # the decoder's attention dropout draws the same masks in both runs
    task.zero_grad(set_to_none=True)
    losses = task(batch["image"], batch["frames"], batch["frame_mask"], frame_index=batch["frame_index"])
    losses["loss"].backward()
    grads = {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in losses.items()}, grads


def assert_same_step(got: tuple[dict, dict], expected: tuple[dict, dict], tol: float = 1e-5) -> None:
    (losses, grads), (expected_losses, expected_grads) = got, expected
    assert losses.keys() == expected_losses.keys()
    for name in losses:
        torch.testing.assert_close(losses[name], expected_losses[name], rtol=tol, atol=tol, msg=name)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=tol, atol=tol, msg=name)


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts the graphs it was given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return graph_module.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # compiled code of earlier tests must not serve (or count in) this one
    yield
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------ 1. regions, not the encoder
def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_compile_regions_compiles_each_block_in_place_and_keeps_the_checkpoint_keys() -> None:
    task = tiny_vit_task()
    model = task.model
    state = {name: value.clone() for name, value in model.state_dict().items()}
    regions = compile_regions(model, backend="aot_eager")

    blocks = list(model.encoder.backbone.blocks)
    assert repeated_blocks(model.encoder) == blocks and len(blocks) == 2
    assert all(is_compiled(block) for block in blocks)
    assert not is_compiled(model.encoder) and not is_compiled(model.encoder.backbone) and not is_compiled(model)
    decoder = model.decoder
    assert is_compiled(decoder.self_block) and is_compiled(decoder.cross_block) and not is_compiled(decoder)
    # The decoder calls the cross block's forward_kv directly: it is compiled too, bound to its own block.
    assert hasattr(decoder.cross_block.forward_kv.__func__, "_torchdynamo_orig_callable")
    assert decoder.cross_block.forward_kv.__self__ is decoder.cross_block
    assert (regions.encoder_blocks, regions.decoder_blocks, regions.whole_encoder) == (2, 2, False)

    assert list(model.state_dict()) == list(state)  # same names: checkpoints of eager and compiled runs mix
    fresh = tiny_vit_task().model
    assert [name for name, _ in model.named_parameters()] == [name for name, _ in fresh.named_parameters()]
    model.load_state_dict(state, strict=True)
    copied = copy.deepcopy(model)  # a deep copy (EMA, validation) calls its own block, not the original's
    assert copied.decoder.cross_block.forward_kv.__self__ is copied.decoder.cross_block


def test_an_encoder_without_blocks_is_compiled_whole() -> None:
    class ConvOnly(ImageEncoder):  # an encoder with no repeated blocks, as the FashionNet VGG baseline
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 4, stride=4)
            self.width, self.embed_dim, self.num_tokens = 8, 8, 5
            self.preprocess = Preprocess(input_size=8)

        def forward(self, images: torch.Tensor) -> EncoderOutput:
            tokens = self.conv(images).flatten(2).transpose(1, 2)
            tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
            return EncoderOutput(tokens[:, 0], tokens)

    model = RiceModel(ConvOnly())
    regions = compile_regions(model, backend="aot_eager")
    assert regions.whole_encoder and regions.encoder_blocks == 0 and is_compiled(model.encoder)
    expected = model.encoder.conv(torch.ones(2, 3, 8, 8)).flatten(2).mean(-1)
    torch.testing.assert_close(model.encode_image(torch.ones(2, 3, 8, 8)), torch.nn.functional.normalize(expected))


def test_the_blocks_of_a_tower_share_one_trace() -> None:
    model = create_model("rice_tiny", pretrained=False)  # two blocks
    backend = CountingBackend()
    compile_regions(model, backend=backend)
    model.encode_image(torch.randn(4, 3, 64, 64)).sum().backward()
    assert len(repeated_blocks(model.encoder)) == 2
    assert backend.graphs == 1  # one graph for both blocks (their parameters are its inputs)


def test_a_compiled_training_step_equals_the_eager_step() -> None:
    """Encoder blocks and decoder blocks compiled (rice_tiny's compiled run: tests/train/test_compile.py)."""
    task = tiny_vit_task()
    eager = copy.deepcopy(task)
    batch = tiny_batch(task.model.preprocess.input_size)
    compile_regions(task.model, backend="aot_eager")
    compiled_step = run_step(task, batch)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the step did go through torch.compile
    assert_same_step(compiled_step, run_step(eager, batch))


# ------------------------------------------------------------------------------------------------ 2. frame buckets
def test_the_collated_frame_index_is_padded_to_a_bucket_with_padded_frames() -> None:
    plain = tiny_batch(8)["frame_index"]
    for buckets, size in [(1, 15), (2, 15), (3, 15), (4, 12), (15, 11)]:  # sizes ceil(k * 15 / buckets) >= 11
        batch = tiny_batch(8, frame_buckets=buckets)
        index = batch["frame_index"]
        assert len(index) == size, buckets
        assert torch.equal(index[: len(plain)], plain)  # the real frames first, in order
        padded = index[len(plain):]
        assert not batch["frame_mask"].reshape(-1)[padded].any()  # then padded frames only
        assert len(set(index.tolist())) == len(index)  # each position once
    assert len(tiny_batch(8, lengths=(3, 3, 3, 2, 1), frame_buckets=4)["frame_index"]) == 12  # 12 real frames


def test_bucketed_frames_give_the_unbucketed_outputs_losses_and_gradients_and_padding_stays_inert() -> None:
    task = tiny_vit_task()
    plain = tiny_batch(32)
    mask = plain["frame_mask"]
    expected_out = task.model(plain["image"], plain["frames"], mask, return_tokens=True,
                              frame_index=plain["frame_index"])  # fmt: skip
    expected = run_step(task, plain)
    for buckets in (1, 4):
        batch = tiny_batch(32, frame_buckets=buckets)
        assert len(batch["frame_index"]) > len(plain["frame_index"])  # padded frames are run
        frames = batch["frames"].clone()
        frames[~mask] = torch.randn_like(frames[~mask]) * 10  # noise in the padded frames must not leak
        batch = {**batch, "frames": frames}
        out = task.model(batch["image"], frames, mask, return_tokens=True, frame_index=batch["frame_index"])
        for name in ("image_features", "video_features", "image_tokens", "video_tokens"):
            torch.testing.assert_close(out[name], expected_out[name], rtol=1e-5, atol=1e-5, msg=name)
        assert not out["video_tokens"][~mask].any()  # padded positions hold zeros, as when they are not run
        assert_same_step(run_step(task, batch), expected)


def test_batches_in_one_bucket_compile_once_and_without_buckets_they_recompile() -> None:
    task = tiny_vit_task()
    model = task.model
    compile_regions(model, backend=(backend := CountingBackend()))
    lengths = [(3, 2, 1, 3, 2), (3, 3, 1, 2, 3)]  # 11 and 12 real frames: one bucket of 12 with frame_buckets=5
    for length in lengths:
        batch = tiny_batch(32, lengths=length, frame_buckets=5)
        model(batch["image"], batch["frames"], batch["frame_mask"], frame_index=batch["frame_index"])
    bucketed = backend.graphs
    torch._dynamo.reset()
    compile_regions(model, backend=(backend := CountingBackend()))
    for length in lengths:
        batch = tiny_batch(32, lengths=length)
        model(batch["image"], batch["frames"], batch["frame_mask"], frame_index=batch["frame_index"])
    assert bucketed == 1  # the encoder blocks' one graph (the decoder does not run in a bare forward)
    assert backend.graphs == 2  # a new frame count: a recompile


def test_the_bucketed_task_step_traces_into_one_graph() -> None:
    """Buckets keep the step free of host syncs (tests/train/test_sync_free.py): no break, data-dependent or not."""
    task = tiny_vit_task()
    batch = tiny_batch(32, frame_buckets=4)

    def forward_and_losses(images, frames, frame_mask, frame_index):
        return task(images, frames, frame_mask, frame_index=frame_index)["loss"]

    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False, capture_scalar_outputs=False):
        report = torch._dynamo.explain(forward_and_losses)(batch["image"], batch["frames"], batch["frame_mask"],
                                                           batch["frame_index"])  # fmt: skip
    assert report.graph_break_count == 0, [str(r.reason)[:160] for r in report.break_reasons]


def test_frame_buckets_are_refused_for_an_encoder_with_batchnorm_and_automatic_elsewhere() -> None:
    tiny = create_model("rice_tiny", pretrained=False).encoder  # BatchNorm in its convolutional stem
    vit = tiny_vit_task().model.encoder
    with pytest.raises(ValueError, match=r"^train.frame_buckets=4: the encoder \(ConvStemEncoder\) has BatchNorm.*"
                                         r"set train.frame_buckets=0$"):  # fmt: skip
        resolve_frame_buckets(4, True, tiny)
    assert resolve_frame_buckets(None, True, tiny) == 0
    assert resolve_frame_buckets(None, True, vit) == 8 and resolve_frame_buckets(None, False, vit) == 0
    assert resolve_frame_buckets(3, False, vit) == 3 and resolve_frame_buckets(0, True, vit) == 0


def test_the_engine_compiles_the_regions_into_the_cache_directory_and_refuses_buckets_with_batchnorm(
    synthetic_root, tmp_path, monkeypatch, capsys
) -> None:  # fmt: skip
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "elsewhere"))  # put back after the test
    cache = tmp_path / "compile-cache"
    fit(run_config(synthetic_root, tmp_path / "run", "train.compile=true", "train.compile_backend=aot_eager",
                   f"train.compile_cache={cache}", "loss.losses=[icl,pmd]"))  # fmt: skip
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache) and cache.is_dir()
    assert "compiled 2 encoder blocks, 2 decoder blocks" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^train.frame_buckets=2: the encoder \(ConvStemEncoder\) has BatchNorm"):
        fit(run_config(synthetic_root, tmp_path / "buckets", "train.frame_buckets=2"))


# --------------------------------------------------------------------------------------------- 3. CUDA graphs
def test_cuda_graphs_are_refused_with_a_one_line_error_where_they_cannot_work(synthetic_root, tmp_path) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert check_compile_settings(True, "inductor", True, cuda, False) == "reduce-overhead"
    assert check_compile_settings(True, "inductor", False, cpu, False) is None
    for args, says in [
        ((True, "inductor", True, cpu, False), "needs a CUDA device (this run is on cpu); set train.cuda_graphs=false"),
        ((False, "inductor", True, cuda, False), "set train.compile=true and train.compile_backend=inductor"),
        ((True, "aot_eager", True, cuda, False), "set train.compile=true and train.compile_backend=inductor"),
        ((True, "inductor", True, cuda, True), "train.grad_cache runs chunks of other shapes"),
    ]:
        with pytest.raises(ValueError, match="^train.cuda_graphs=true") as err:
            check_compile_settings(*args)
        assert says in str(err.value) and "\n" not in str(err.value)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="needs a CUDA device"):  # before anything is built or written
        fit(run_config(synthetic_root, out, "train.compile=true", "train.cuda_graphs=true"))
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: train.cuda_graphs replays CUDA graphs")
def test_cuda_graph_regions_train_as_the_eager_step() -> None:
    device = torch.device("cuda")
    task = tiny_vit_task().to(device)
    eager = copy.deepcopy(task)
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value
             for key, value in tiny_batch(32, frame_buckets=1).items()}  # fmt: skip
    compile_regions(task.model, backend="inductor", mode="reduce-overhead")
    for _ in range(3):  # warm-up, recording, replay
        compiled_step = run_step(task, batch)
    assert_same_step(compiled_step, run_step(eager, batch), tol=1e-3)  # inductor's fused kernels: fp32 rounding

"""Evaluation under torch.distributed and autocast: a 2-rank gloo run, each rank embedding its share, equals one
process; bf16 autocast changes the embeddings only within bf16 precision; ``auto`` is fp32 on the CPU."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from rice.config import DataConfig, EvalConfig, ModelConfig
from rice.data import build_eval_datasets, write_synthetic_dataset
from rice.models import build_model
from rice.retrieval.evaluate import autocast_dtype, extract_embeddings
from rice.retrieval.evaluate_model import evaluate_model
from tests.distributed_utils import run_gloo


def _model(weights=None):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="rice_tiny", pretrained=False), with_decoder=True)
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    """7 test products: query and gallery counts that do not split evenly over 2 ranks."""
    root = tmp_path_factory.mktemp("odd")
    return write_synthetic_dataset(root, num_products=9, num_test_products=7, videos_per_product=1, frames=6,
                                   size=32, seed=5)  # fmt: skip


def _sharded_eval(rank, world_size, root, weights, out_dir):
    torch.set_num_threads(1)
    model = _model(weights)
    data_cfg, eval_cfg = DataConfig(root=str(root), workers=0), EvalConfig(batch_size=2, rerank=3)
    results, emb = evaluate_model(model, data_cfg, eval_cfg, shard=True)
    np.savez(f"{out_dir}/rank{rank}.npz", q=emb.query_embeddings, g=emb.gallery_embeddings,
             qid=np.array(emb.query_ids), gid=np.array(emb.gallery_ids), tokens=emb.gallery_tokens.numpy())  # fmt: skip
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results))


def test_two_rank_sharded_eval_equals_one_process(odd_root, tmp_path):
    model = _model()
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    data_cfg, eval_cfg = DataConfig(root=str(odd_root), workers=0), EvalConfig(batch_size=2, rerank=3)
    single, emb = evaluate_model(model, data_cfg, eval_cfg)
    assert len(emb.query_ids) % 2 == 1  # an uneven split is exercised

    run_gloo(_sharded_eval, world_size=2, args=(odd_root, weights, tmp_path))
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert got["qid"].tolist() == emb.query_ids and got["gid"].tolist() == emb.gallery_ids  # dataset order
        np.testing.assert_allclose(got["q"], emb.query_embeddings, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["g"], emb.gallery_embeddings, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["tokens"], emb.gallery_tokens.numpy(), rtol=1e-5, atol=1e-6)
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == json.loads(json.dumps(single))


def test_bf16_autocast_embeddings_close_to_fp32(synthetic_root):
    model = _model()
    queries, gallery = build_eval_datasets(DataConfig(root=str(synthetic_root), workers=0), model.preprocess)
    queries, gallery = Subset(queries, range(3)), Subset(gallery, range(4))  # bf16 convs are slow on most CPUs
    fp32 = extract_embeddings(model, queries, gallery, batch_size=4, precision="fp32")
    bf16 = extract_embeddings(model, queries, gallery, batch_size=4, precision="bf16")
    assert bf16.query_embeddings.dtype == np.float32
    for a, b in ((fp32.query_embeddings, bf16.query_embeddings), (fp32.gallery_embeddings, bf16.gallery_embeddings)):
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.99  # same embeddings up to bf16 rounding (8 mantissa bits) ...
        assert not np.array_equal(a, b)  # ... but autocast did run in bf16


def test_precision_auto_is_fp32_on_cpu_and_bf16_on_cuda():
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("auto", "cuda") == torch.bfloat16 and autocast_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype("int8", "cpu")

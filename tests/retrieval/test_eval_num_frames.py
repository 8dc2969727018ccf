"""``eval.num_frames``: a model trained on T frames is scored on another number of query frames (the protocol's 10
for the hard demo's 4-frame recipe); evaluation then embeds exactly what a data config with that T embeds."""

import numpy as np
import torch

from rice.config import DataConfig, EvalConfig, ModelConfig
from rice.data import write_synthetic_dataset
from rice.models import build_model
from rice.reports.evaluation import thumbnail_datasets
from rice.retrieval.evaluate_model import evaluate_model


def test_eval_num_frames_overrides_the_training_frames(tmp_path):
    root = write_synthetic_dataset(tmp_path, num_products=6, videos_per_product=1, frames=8, size=32, seed=2)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="rice_tiny", pretrained=False)).eval()
    train_t = DataConfig(root=str(root), workers=0, num_frames=2)
    overridden, emb = evaluate_model(model, train_t, EvalConfig(batch_size=4, num_frames=6))
    reference, ref_emb = evaluate_model(model, train_t.model_copy(update={"num_frames": 6}), EvalConfig(batch_size=4))
    _, two = evaluate_model(model, train_t, EvalConfig(batch_size=4))
    np.testing.assert_array_equal(emb.query_embeddings, ref_emb.query_embeddings)
    np.testing.assert_array_equal(emb.gallery_embeddings, ref_emb.gallery_embeddings)
    assert overridden == reference
    assert not np.allclose(emb.query_embeddings, two.query_embeddings, atol=1e-4)  # 6 frames are not 2
    # the report's pictures are the frames that were scored
    queries, _ = thumbnail_datasets(train_t, "test", eval_cfg=EvalConfig(num_frames=6))
    assert int(queries[0]["frame_mask"].sum()) == 6
    assert int(thumbnail_datasets(train_t, "test")[0][0]["frame_mask"].sum()) == 2

"""Training must beat the model it started from, by a wide margin measured on the same data, and move every weight.

(tests/train/test_learns.py compares the trained model with chance only, a mark the untrained rice_tiny can
already pass on easy data.)
"""

from rice.models import build_model
from rice.models.loading import load
from rice.retrieval.evaluate_model import evaluate_model
from rice.train.engine import fit
from tests.train.test_training_behaviour import run_config
from tests.training_watch import watch_model


def test_trained_rice_tiny_beats_its_own_starting_point(synthetic_root, tmp_path):
    # the tiny recipe's learning rate (1e-3, 20 warm-up steps); 40 steps of 6 pairs, 2 frames per clip
    cfg = run_config(synthetic_root, tmp_path / "run", "train.batch_size=6", "train.max_steps=40",
                     "optim.warmup_steps=5")  # fmt: skip
    with watch_model() as seen:
        last = fit(cfg)
    untrained = build_model(cfg.model)
    untrained.load_state_dict(seen.initial)
    # the same 12 clips and 12 shop images for both models: the pairs the model was trained on
    before, _ = evaluate_model(untrained.eval(), cfg.data, cfg.eval, split="train")
    after, _ = evaluate_model(load(last), cfg.data, cfg.eval, split="train")
    assert after["num_queries"] == before["num_queries"] == 12
    # measured: 8.3 -> 83.3 (R@1), 16.7 -> 100 (R@3)
    assert after["R@1"] >= before["R@1"] + 40, (before, after)
    assert after["R@3"] >= before["R@3"] + 40, (before, after)
    moved = seen.moved()
    frozen = [name for name, delta in moved.items() if not delta.any()]
    assert not frozen, f"parameters that never moved: {frozen}"

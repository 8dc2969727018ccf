"""Real 2-rank DDP training (torchrun --standalone, gloo): both ranks hold the same weights after every step, and
they equal one process trained on the concatenated batch.

One process with batch 2B sees, at each step, the same 2B training pairs as two ranks with B each (the
DistributedSampler deals one shuffled order out to the ranks), the gathered contrastive loss over the global batch
is the same, and DDP averages the gradients the gather summed. ``timesformer_tiny`` has neither BatchNorm (whose
per-rank batch statistics would differ from the single process's) nor dropout.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

from rice.train.engine import fit
from tests.train.test_training_behaviour import run_config
from tests.training_watch import watch_model

REPO = Path(__file__).resolve().parents[2]
STEPS, PER_RANK = 3, 2


def test_two_ranks_hold_identical_weights_equal_to_one_process_on_the_concatenated_batch(synthetic_root, tmp_path):
    ddp = run_config(synthetic_root, tmp_path / "ddp", f"train.batch_size={PER_RANK}", f"train.max_steps={STEPS}",
                     model="timesformer_tiny")  # fmt: skip
    ddp.save(tmp_path / "ddp.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "tests.ddp_fit_worker", str(tmp_path / "ddp.yaml"), str(tmp_path / "weights")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"weights.rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["batches"] for r in ranks] == [STEPS, STEPS]

    single_cfg = run_config(synthetic_root, tmp_path / "single", f"train.batch_size={2 * PER_RANK}",
                            f"train.max_steps={STEPS}", model="timesformer_tiny")  # fmt: skip
    with watch_model() as single:
        fit(single_cfg)
    names = [name for name, p in single.model.named_parameters() if p.requires_grad]
    for name in names:
        torch.testing.assert_close(ranks[0]["initial"][name], single.initial[name], rtol=0, atol=0)  # same start
        assert torch.equal(ranks[0]["final"][name], ranks[1]["final"][name]), f"ranks disagree on {name}"
        torch.testing.assert_close(ranks[0]["final"][name], single.final()[name], rtol=1e-4, atol=1e-5, msg=name)
    moved = sum(int((single.final()[n] != single.initial[n]).any()) for n in names)
    assert moved == len(names), f"only {moved} of {len(names)} parameters moved: the comparison would mean little"

"""Break rice on purpose, one behaviour at a time, and check that the tests naming that behaviour fail.

Each mutation patches the source text of a copy of the tree (tracked and untracked, non-ignored files), then runs
the tests that name the behaviour with PYTHONPATH at the copy. A mutation the tests do not catch is a test that
asserts too little. CI does not run this (it trains several small models); run it before changing these tests:

    python tests/mutations.py            # every mutation
    python tests/mutations.py --list     # their names
    python tests/mutations.py no-ddp-wrapper rerank-no-op
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (exact source text, its replacement); each text must occur once
    tests: tuple[str, ...]


ENGINE, EVALUATION, DECODER = "rice/train/engine.py", "rice/retrieval/evaluate_model.py", "rice/models/decoder.py"
BEHAVIOUR = "tests/train/test_training_behaviour.py"
ACCUM = "test_grad_accum_2_steps_along_the_mean_of_its_two_micro_batch_losses"

MUTATIONS = [
    # --- the breakages of issue 12 ---------------------------------------------------------------------------------
    Mutation("no-optimizer-step", ENGINE,
             (("        else:\n            optimizer.step()\n", "        else:\n            pass\n"),),
             ("tests/train/test_learning.py", f"{BEHAVIOUR}::{ACCUM}")),
    Mutation("no-ddp-wrapper", ENGINE,
             (("train_module = DistributedDataParallel(task) if world.world_size > 1 else task",
               "train_module = task"),),
             ("tests/train/test_ddp_training.py",)),
    Mutation("loss-not-divided-no-accumulation", ENGINE,
             (('loss = losses["loss"] / tcfg.grad_accum', 'loss = losses["loss"]'),
              ("last_micro = micro % tcfg.grad_accum == 0", "last_micro = True")),
             (f"{BEHAVIOUR}::{ACCUM}",)),
    Mutation("loss-not-divided", ENGINE, (('loss = losses["loss"] / tcfg.grad_accum', 'loss = losses["loss"]'),),
             (f"{BEHAVIOUR}::{ACCUM}",)),
    Mutation("rerank-no-op", EVALUATION, (("    k = eval_cfg.rerank\n", "    return top\n    k = eval_cfg.rerank\n"),),
             ("tests/retrieval/test_rerank_behaviour.py",)),
    Mutation("no-clip-token-layernorm", DECODER,
             (("c = h if context is None else self.ln_1(context)", "c = h if context is None else context"),),
             ("tests/models/test_decoder_reference.py",)),
    # --- further breakages of behaviours the suite names ---------------------------------------------------------
    Mutation("grad-clip-ignored", ENGINE, (("if cfg.optim.grad_clip:", "if False:"),),
             (f"{BEHAVIOUR}::test_grad_clip_scales_the_step_to_the_clip_norm",)),
    Mutation("no-logit-scale-clamp", ENGINE,
             (("model.logit_scale.clamp_(0, math.sqrt(100.0))", "model.logit_scale.clamp_(-1e9, 1e9)"),),
             (f"{BEHAVIOUR}::test_logit_scale_is_clamped_to_sqrt_100_after_a_step",)),
    Mutation("scheduler-steps-on-fp16-overflow", ENGINE, (("        if stepped:\n", "        if True:\n"),),
             (f"{BEHAVIOUR}::test_fp16_overflow_skips_the_optimizer_and_the_scheduler_step",)),
    Mutation("train-items-unseeded", ENGINE,
             (("build_train_dataset(cfg.data, model.preprocess, seed=cfg.train.seed)",
               "build_train_dataset(cfg.data, model.preprocess, seed=None)"),),
             (f"{BEHAVIOUR}::test_dataloader_workers_give_the_same_training_as_the_main_process",)),
    Mutation("rerank-padding-duplicated", EVALUATION,
             (("unique = list(dict.fromkeys(int(c) for c in candidates))", "unique = [int(c) for c in candidates]"),),
             ("tests/retrieval/test_rerank_behaviour.py::test_rerank_on_livestreams_with_fewer_images_than_k",)),
    Mutation("attention-scale", DECODER,
             (("logits = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)",
               "logits = (q @ k.transpose(-2, -1)) / self.head_dim"),),
             ("tests/models/test_decoder_reference.py", "tests/losses/test_reconstruction.py")),
    Mutation("pfr-head-merge-unscaled", DECODER,
             (("return self.head_merge(attention * math.sqrt(self.head_dim))", "return self.head_merge(attention)"),),
             ("tests/losses/test_reconstruction.py",)),
    Mutation("chance-ignores-several-positives", "rice/train/demo.py",
             (("m = len(set(gt) & gallery)", "m = min(1, len(set(gt) & gallery))"),),
             ("tests/test_demo.py",)),
    Mutation("eval-split-ignored", "rice/cli/training.py",
             (("            split=split,\n", '            split="test",\n'),),
             ("tests/test_cli_commands.py::test_eval_root_and_split",)),
    Mutation("eval-root-ignored", "rice/cli/training.py",
             (('data_overrides={"root": root,', 'data_overrides={"root": None,'),),
             ("tests/test_cli_commands.py::test_eval_root_and_split",)),
    Mutation("index-load-empty", "rice/retrieval/index.py",
             (("return faiss.read_index(str(path))", "return faiss.IndexFlatIP(faiss.read_index(str(path)).d)"),),
             ("tests/retrieval/test_index.py",)),
    Mutation("recall-off-by-one", "rice/retrieval/metrics.py", (("hit & (ranks < k)", "hit & (ranks <= k)"),),
             ("tests/retrieval/test_metrics.py",)),
]


def copy_tree(destination: Path) -> None:
    """The files git would commit (tracked plus untracked, not ignored), without .git and build outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.file
    text = path.read_text()
    for old, new in mutation.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"{mutation.name}: {old!r} occurs {count} times in {mutation.file}; update the mutation")
        text = text.replace(old, new)
    path.write_text(text)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    tic = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    return proc.returncode, time.perf_counter() - tic, (proc.stdout + proc.stderr).strip().splitlines()[-1:][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    args = parser.parse_args()
    known = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:36s} {m.file:28s} {' '.join(m.tests)}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; choose from {list(known)}")
    chosen = [known[n] for n in args.names] or MUTATIONS

    rows, missed = [], []
    with tempfile.TemporaryDirectory(prefix="rice-mutations-") as tmp:
        if not args.no_baseline:  # every test used must pass on the unmutated tree
            clean = Path(tmp) / "clean"
            copy_tree(clean)
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, seconds, last = run_tests(clean, tests)
            print(f"baseline ({len(tests)} test targets): exit {code} in {seconds:.0f} s: {last}", flush=True)
            if code != 0:
                print("the unmutated tree fails these tests: fix that first", file=sys.stderr)
                return 2
        for mutation in chosen:
            tree = Path(tmp) / mutation.name
            copy_tree(tree)
            apply(mutation, tree)
            code, seconds, last = run_tests(tree, mutation.tests)
            caught = code == 1  # 1: tests failed (2-5: interrupted, usage or collection errors: not a real catch)
            rows.append((mutation.name, "caught" if caught else f"MISSED (exit {code})", seconds, last))
            print(f"{mutation.name:36s} {rows[-1][1]:16s} {seconds:6.0f} s  {last}", flush=True)
            if not caught:
                missed.append(mutation.name)
            shutil.rmtree(tree, ignore_errors=True)
    print(f"\n{len(rows) - len(missed)} of {len(rows)} mutations caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""synth -> train with 2 DDP processes (real torchrun, gloo) -> eval -> JSON, all through the `rice` command."""

import json
import os
import subprocess
import sys

import torch


def rice(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "rice", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"rice {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_synth_train_ddp_eval_json(tmp_path):
    rice("synth", "--out", "data", "--products", "10", "--seed", "1", cwd=tmp_path)
    assert (tmp_path / "data" / "train.json").is_file()
    rice(
        "train", "--root", "data", "--model", "rice_tiny", "--max-steps", "2", "--batch-size", "4",
        "--out", "run", "--nproc-per-node", "2", "--workers", "0",
        "--set", "optim.warmup_steps=1", "--set", "train.log_every=1",
        cwd=tmp_path,
    )  # fmt: skip
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["config"]["train"]["max_steps"] == 2
    assert (tmp_path / "run" / "config.yaml").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # written once (rank 0), not once per rank

    rice("eval", "run/last.pt", "--json", "r.json", "--save-embeddings", "emb.npz", cwd=tmp_path)
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result) >= {"R@1", "R@3", "R@5", "R@10", "num_queries", "subsets"}
    assert result["num_queries"] == 10
    assert set(result["subsets"]) <= {"hard", "regular"} and result["subsets"]
    for value in (result[k] for k in ("R@1", "R@3", "R@5", "R@10")):
        assert 0.0 <= value <= 100.0

    # Deterministic, and the run directory stands for its last.pt: the same numbers.
    rice("eval", "run", "--json", "r2.json", cwd=tmp_path)
    assert json.loads((tmp_path / "r2.json").read_text()) == result

    import numpy as np

    saved = np.load(tmp_path / "emb.npz")
    assert saved["query_embeddings"].shape[0] == 10 and saved["gallery_embeddings"].dtype == np.float32
    assert np.allclose(np.linalg.norm(saved["gallery_embeddings"], axis=1), 1.0, atol=1e-5)


def test_bad_root_is_one_line_error(tmp_path):
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "rice", "train", "--root", str(tmp_path / "nope"), "--model", "rice_tiny",
         "--max-steps", "1", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "nope" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_multi_node_flags_two_nodes_on_loopback(tmp_path, synthetic_root):
    """Two `rice train --nnodes 2 --node-rank r` launches (one process each) meet at --master-addr/--master-port."""
    from tests.distributed_utils import free_port

    env = dict(os.environ, OMP_NUM_THREADS="1")
    for attempt in range(3):  # the port is free when picked but is bound later: retry if another process took it
        out = tmp_path / f"run{attempt}"
        common = [
            sys.executable, "-m", "rice", "train", "--root", str(synthetic_root), "--model", "rice_tiny",
            "--max-steps", "2", "--batch-size", "4", "--out", str(out), "--workers", "0",
            "--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        ]  # fmt: skip
        nodes = [
            subprocess.Popen([*common, "--node-rank", str(rank)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
            for rank in range(2)
        ]
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
        if not any("address already in use" in text.lower() for text in outputs):
            break
    assert all(node.returncode == 0 for node in nodes), outputs
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == 2


# --- every bad input gives one line on stderr and exit code 2 ---------------------------------------------------------
def _bad_inputs(tmp_path):
    """(name, argv, a fragment the one-line error must contain) for each bad input we promise to catch."""
    (tmp_path / "model_int.yaml").write_text("model: 3\n")
    (tmp_path / "broken.yaml").write_text("train: {max_steps: 3\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "a_file").write_text("not a folder")
    held = tmp_path / "held"
    held.mkdir()
    (held / "last.pt").write_bytes(b"x")
    (held / "metrics.jsonl").write_text("")
    train = ["train", "--root", str(tmp_path), "--model", "rice_tiny", "--out", str(tmp_path / "out")]
    return [
        ("model section is a number", [*train, "--config", str(tmp_path / "model_int.yaml")], "section 'model'"),
        ("YAML syntax", [*train, "--config", str(tmp_path / "broken.yaml")], "not valid YAML"),
        ("binary config file", [*train, "--config", str(tmp_path / "binary.yaml")], "not a text file"),
        ("missing config file", [*train, "--config", "no_such_recipe"], "no_such_recipe"),
        ("python tag in --set", [*train, "--set", "x=!!python/name:os.system"], "not plain YAML"),
        ("--set without =", [*train, "--set", "optim.lr"], "section.key=value"),
        ("unknown --set key", [*train, "--set", "optim.lrr=1"], "optim.lrr"),
        ("invalid value", [*train, "--set", "train.batch_size=0"], "train.batch_size"),
        ("unknown loss", [*train, "--losses", "icl,foo"], "unknown loss"),
        ("unknown loss weight", [*train, "--loss-weights", "icl=1,pmdd=2"], "pmdd"),
        ("--batch-size under a global batch", [*train, "--set", "train.global_batch_size=8", "--batch-size", "4"],
         "train.global_batch_size=8"),
        ("non-numeric loss weight", [*train, "--loss-weights", "icl=high"], "name=number"),
        ("out holds a run", [*train[:-1], str(held)], "already holds a run"),
        ("out holds a run (torchrun)", [*train[:-1], str(held), "--nproc-per-node", "2"], "already holds a run"),
        ("missing --resume file", [*train, "--resume", str(tmp_path / "nope.pt")], "nope.pt"),
        ("eval --json under a file", ["eval", "any.pt", "--json", str(tmp_path / "a_file" / "r.json")], "--json"),
        ("eval --json is a folder", ["eval", "any.pt", "--json", str(tmp_path)], "--json"),
        ("eval missing checkpoint", ["eval", str(tmp_path / "nope.pt")], "nope.pt"),
    ]


def test_every_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path):
    from typer.testing import CliRunner

    from rice.cli import app

    runner = CliRunner()
    for name, argv, fragment in _bad_inputs(tmp_path):
        result = runner.invoke(app, argv)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {result.stderr!r}"
        assert fragment in lines[0], f"{name}: {lines[0]!r} lacks {fragment!r}"
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # none of them started a run

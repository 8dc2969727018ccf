"""Every benchmark of benchmarks/run.py runs at its tiny (--smoke) size and reports well-formed rows, so the
scripts cannot rot. The figures of a smoke run mean nothing and are not checked; the real ones are in
docs/performance.md. About a minute in all on 2 idle cores."""

import json

import pytest

from tests.benchmark_modules import BENCH, benchmark_module

KEYS = {"name", "ours", "baseline", "ratio", "target", "met"}
OURS = ["startup", "clip_reading", "prepare_frames", "prepared_vs_mp4", "input_pipeline", "loader_per_core",
        "eval_extraction",
        "eval_precision", "grouped_search", "host_sync", "decoder", "decoder_pass", "ann", "sync", "gpu", "lpr_open",
        "compile_time", "safe_extract", "hard_demo_step", "scan", "scan_memory", "train_e2e",
        "catalogue_precision"]  # fmt: skip


@pytest.fixture(scope="module")
def suite():
    with benchmark_module("run") as module:
        yield module


def test_suite_lists_our_benchmarks(suite):
    assert set(OURS) <= set(suite.BENCHMARKS)


@pytest.mark.parametrize("name", OURS)
def test_benchmark_runs_at_smoke_size(suite, name):
    rows = suite.run_one(name, smoke=True)
    assert rows
    for r in rows:
        assert KEYS <= set(r), r
        note = r.get("note", "")
        assert "failed" not in note and note != "not in this tree yet", r  # a raise is reported: fail here
        assert r["name"].split(":")[0].strip()
        if r["ours"] is not None and r["met"] is not None:
            assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"])


def test_run_prints_table_and_writes_json(suite, tmp_path, capsys):
    rows = suite.main(["grouped_search", "--smoke", "--json", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(rows))
    table = capsys.readouterr().out
    assert "ratio" in table and rows[0]["name"] in table


def test_unknown_benchmark_name_is_refused(suite):
    with pytest.raises(SystemExit):
        suite.main(["no_such_benchmark"])


def test_hard_demo_spread_regroups_the_demo_clips_and_scores_them(tmp_path, monkeypatch):
    """benchmarks/hard_demo_spread.py at a tiny size: 4 test clips per product, the first of them the demo's own
    test clip (the same file the demo renders), scored on all of them and on the demo's."""
    monkeypatch.syspath_prepend(str(BENCH))
    import hard_demo_spread

    from rice.data import write_synthetic_dataset
    from rice.train.demo import DEMO_DATA

    rows = hard_demo_spread.main(["--work", str(tmp_path / "w"), "--seeds", "3", "--steps", "2", "--products", "4",
                                  "--set", "train.batch_size=4"])
    assert len(rows) == 1 and rows[0]["queries"] == 16 and rows[0]["demo clips"] == 4 and rows[0]["seed"] == 3
    demo = write_synthetic_dataset(tmp_path / "demo", **{**DEMO_DATA, "num_products": 4}, difficulty="hard")
    spread_test = json.loads((tmp_path / "w" / "data" / "test.json").read_text())
    spread_train = json.loads((tmp_path / "w" / "data" / "train.json").read_text())
    for product, record in json.loads((demo / "train.json").read_text()).items():
        assert spread_train[product]["video_paths"] == record["video_paths"]  # the demo's training clips
    for product, record in json.loads((demo / "test.json").read_text()).items():
        ours = spread_test[product]["video_paths"]
        assert len(ours) == 4 and ours[0] == record["video_paths"][0]
        assert (demo / ours[0]).read_bytes() == (tmp_path / "w" / "data" / ours[0]).read_bytes()

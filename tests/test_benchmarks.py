"""Every benchmark of benchmarks/run.py runs at its tiny (--smoke) size and reports well-formed rows, so the
scripts cannot rot. The figures of a smoke run mean nothing and are not checked; the real ones are in
docs/performance.md."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
KEYS = {"name", "ours", "baseline", "ratio", "target", "met"}


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, str(BENCH))
    try:
        import run

        yield run
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.timeout(600)  # about 60 s on 2 idle cores; much more when they are shared
def test_every_benchmark_runs_at_smoke_size(suite, tmp_path):
    present = [name for name in suite.BENCHMARKS if (BENCH / f"{name}.py").exists()]
    assert {"startup", "clip_reading", "prepare_frames", "input_pipeline", "eval_extraction", "gpu"} <= set(present)
    rows = suite.main(["--smoke", "--json", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(rows))
    for r in rows:
        assert KEYS <= set(r), r
        assert "failed" not in r["note"], r  # a benchmark that raised is reported, and fails this test
    reported = {r["name"].split(":")[0] for r in rows}
    assert {"startup", "clip reading", "prepare", "input pipeline", "eval", "gpu"} <= reported
    measured = [r for r in rows if r["ours"] is not None and r["met"] is not None]
    assert all(r["ratio"] == pytest.approx(r["ours"] / r["baseline"]) for r in measured)


def test_unknown_benchmark_name_is_refused(suite):
    with pytest.raises(SystemExit):
        suite.main(["no_such_benchmark"])

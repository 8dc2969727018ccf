"""`rice report RUN_DIR`: metrics.jsonl -> one PNG of losses, learning rates and logit scale."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rice.cli import app
from rice.reports import plot_training_curves, read_metrics

pytest.importorskip("matplotlib")


def _write_metrics(path, records, extra_lines=()):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def _records(n):
    return [
        {"step": s, "lr": 1e-3 * s / n, "head_lr": 2e-3 * s / n, "icl_loss": 4.0 / s, "pmd_loss": 1.0 / s,
         "loss": 5.0 / s, "logit_scale": 3.0 + 0.01 * s, "clips_per_s": 10.0 + s}
        for s in range(1, n + 1)
    ]  # fmt: skip


def test_read_metrics_keeps_every_numeric_series_and_skips_broken_lines(tmp_path):
    records = _records(12)
    _write_metrics(tmp_path / "metrics.jsonl", records,
                   extra_lines=['{"step": 13, "loss": 0.1', '{"note": "no step"}', '{"step": 14, "loss": NaN}'])
    series = read_metrics(tmp_path / "metrics.jsonl")
    assert set(series) == {"lr", "head_lr", "icl_loss", "pmd_loss", "loss", "logit_scale", "clips_per_s"}
    for key in series:  # an independent read of the same records
        steps, values = series[key]
        assert steps == [r["step"] for r in records]
        np.testing.assert_allclose(values, [r[key] for r in records])


def test_rice_report_draws_one_panel_per_kind_of_curve(tmp_path):
    full, losses_only = tmp_path / "full", tmp_path / "losses"
    full.mkdir()
    losses_only.mkdir()
    _write_metrics(full / "metrics.jsonl", _records(40))
    _write_metrics(losses_only / "metrics.jsonl", [{"step": s, "loss": 1.0 / s} for s in range(1, 41)])

    result = CliRunner().invoke(app, ["report", str(full)])
    assert result.exit_code == 0, result.output
    png = full / "training_curves.png"
    assert png.is_file()
    path = plot_training_curves(losses_only, tmp_path / "out" / "curves.png")
    assert path == tmp_path / "out" / "curves.png"

    with Image.open(png) as three, Image.open(path) as one:
        # Three stacked panels (losses, learning rates, logit scale) against one panel (losses only).
        assert three.height > 2.5 * one.height and three.width == one.width
        pixels = np.asarray(three.convert("RGB")).astype(int)
    # Curves were drawn: plenty of non-white, non-grey (coloured) pixels.
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    assert colourful.mean() > 0.002


def test_rice_report_without_metrics_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "no-run")])
    assert result.exit_code == 2
    assert "metrics.jsonl not found" in result.output and "Traceback" not in result.output

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.jsonl").write_text('{"step": 1, "recall": 3.0}\n')
    result = CliRunner().invoke(app, ["report", str(tmp_path / "other")])
    assert result.exit_code == 2 and "no loss, lr or logit_scale" in result.output

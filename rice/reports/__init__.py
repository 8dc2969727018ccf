"""Static reports a person opens in a browser: evaluation pages and training curves (matplotlib, optional)."""

from rice.reports.evaluation import write_checkpoint_report as write_checkpoint_report
from rice.reports.evaluation import write_eval_report as write_eval_report
from rice.reports.training import plot_training_curves as plot_training_curves
from rice.reports.training import read_metrics as read_metrics

__all__ = ["plot_training_curves", "read_metrics", "write_checkpoint_report", "write_eval_report"]

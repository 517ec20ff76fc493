"""DVC stage `report`: the ablation table and the pseudo-label table, from the metric files."""

from pipeline.cli import run_stage
from pipeline.evaluation.report import report

if __name__ == "__main__":
    run_stage("report", report)

"""DVC stage `pseudo_label`: static CBST pseudo labels on target train from the warmup model."""

from pipeline.cli import run_stage
from pipeline.pseudo_labels.stage import pseudo_label

if __name__ == "__main__":
    run_stage("pseudo_label", pseudo_label)

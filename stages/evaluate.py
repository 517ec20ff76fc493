"""DVC stage `evaluate`: mIoU (19/16/13 protocols), per-class IoU, confusion matrices, panels."""

from pipeline.cli import run_stage
from pipeline.evaluation.evaluate import evaluate

if __name__ == "__main__":
    run_stage("evaluate", evaluate)

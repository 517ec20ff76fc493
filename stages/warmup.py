"""DVC stage `warmup`: source-only training (and the target oracle) on Ray Train."""

from pipeline.cli import run_stage
from pipeline.training.warmup import warmup

if __name__ == "__main__":
    run_stage("warmup", warmup)

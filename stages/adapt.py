"""DVC stage `adapt` (a matrix over ablation rows × seeds): one DASS ablation cell on Ray Train."""

from pipeline.cli import run_stage
from pipeline.training.adapt import adapt

if __name__ == "__main__":
    run_stage("adapt", adapt, options={"--row": str, "--seed": int})

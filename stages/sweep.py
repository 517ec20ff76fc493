"""DVC stage `sweep`: Ray Tune over τ, λ and 𝒯, scored on a held-out slice of target train."""

from pipeline.cli import run_stage
from pipeline.training.sweep import sweep

if __name__ == "__main__":
    run_stage("sweep", sweep)

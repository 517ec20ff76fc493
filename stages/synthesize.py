"""DVC stage `synthesize`: write the embedded benchmark in the real dataset layouts."""

from pipeline.cli import run_stage
from pipeline.data.benchmark import synthesize

if __name__ == "__main__":
    run_stage("synthesize", synthesize)

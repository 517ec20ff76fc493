"""DVC stage `preprocess`: real-layout readers → sharded Parquet with manifests."""

from pipeline.cli import run_stage
from pipeline.data.preprocess import preprocess

if __name__ == "__main__":
    run_stage("preprocess", preprocess)

"""`python -m stages.predict`: a model the DAG wrote, applied to images (not a DVC stage; see
pipeline/predict.py and docs/use-a-model.md).

    python -m stages.predict --model models/adapt/dass_seed0.pt \
        --input data/raw/cityscapes/leftImg8bit/val --output predictions/dass_seed0 --panel 4
"""

import argparse
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.predict import PredictOptions, predict


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model file the DAG writes (models/…/*.pt)")
    parser.add_argument("--input", required=True, help="a folder (recursive), a glob or an image file")
    parser.add_argument(
        "--output", required=True, help="folder for labelIds/, color/, overlay/ and predictions.json"
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="test-time scales, as cbst.scales (default: 1.0)")  # fmt: skip
    parser.add_argument("--flip", action="store_true", help="also average the mirrored image, as cbst.flip")
    parser.add_argument(
        "--overlay", action="store_true", help="also write the prediction blended over the image"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="images per forward pass (default: 4 on a CPU, inference.batch_size on a GPU)",
    )  # fmt: skip
    parser.add_argument("--images-per-task", type=int, default=32, help="images per Ray task (default: 32)")
    parser.add_argument("--panel", type=int, default=0, help="write panel.png of the first N images")


def predict_command(config: Config, model: str, input: str, output: str, scales: list[float], flip: bool,
                    overlay: bool, batch_size: int | None, images_per_task: int,
                    panel: int) -> None:  # fmt: skip
    options = PredictOptions(tuple(scales), flip, overlay, batch_size, images_per_task, panel)
    summary = predict(config, model, input, Path(output), options)
    print(f"{summary['images']} predictions in {Path(output).resolve()} (labelIds/ is the server's format)")


if __name__ == "__main__":
    run_stage("predict", predict_command, arguments=arguments)

"""Screenshot of the MLflow UI comparing the ablation rows of one seed side by side (a docs picture).

Starts a real `mlflow server` on 127.0.0.1 over the project's store, finds the newest run of each
ablation row for `--seed` in experiment `<tracking.experiment>-ablation`, opens MLflow's compare page
(`#/compare-runs?runs=[…]&experiments=[…]`, the route of mlflow 3.17's UI) in headless Chromium and
stops the server by its process id.

    python scripts/mlflow_screenshot.py [--tracking-uri sqlite:///mlflow.db] [--seed 0]
                                        [--output docs/images/mlflow_ablation_compare.png]

Needs Debian's Chromium (`apt-get install chromium`); it is not a project dependency.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.tracking.local_server import mlflow_server  # noqa: E402
from pipeline.training.adaptation_losses import ROWS  # noqa: E402

DEFAULT_OUTPUT = ROOT / "docs" / "images" / "mlflow_ablation_compare.png"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip


def newest_run_per_row(client: MlflowClient, experiment_name: str, seed: int) -> tuple[str, list[str]]:
    """The experiment id and, in ablation order, the newest finished run id of each row for `seed`."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SystemExit(f"error: no MLflow experiment {experiment_name!r} in this store (run `dvc repro`)")
    runs = client.search_runs([experiment.experiment_id], f"params.`ablation.seed` = '{seed}'",
                              order_by=["attributes.start_time DESC"])  # fmt: skip
    newest: dict[str, str] = {}
    for run in runs:
        row = run.data.params.get("ablation.row")
        if row and row not in newest and "final.miou" in run.data.metrics:
            newest[row] = run.info.run_id
    ordered = [newest[row] for row in ROWS if row in newest]
    if not ordered:
        raise SystemExit(f"error: no evaluated ablation run of seed {seed} in {experiment_name!r}")
    return experiment.experiment_id, ordered


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    return f"{base}/#/compare-runs?{query}"


def screenshot(chromium: str, url: str, output: Path, size: tuple[int, int], wait_ms: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
                   f"--screenshot={output}", url]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=180)


def keep_left(path: Path, width: int) -> None:
    """Crop the picture to its left `width` pixels (MLflow 3.17 docks an assistant panel on the right)."""
    with Image.open(path) as picture:
        cropped = picture.crop((0, 0, min(width, picture.width), picture.height))
    cropped.save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="dass-ablation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1100), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--keep-width", type=int, default=1190, help="pixels kept from the left")
    parser.add_argument("--wait-ms", type=int, default=20000, help="page render time")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: headless Chromium not found; install it with `apt-get install chromium`")
    with (
        tempfile.TemporaryDirectory() as scratch,
        mlflow_server(args.tracking_uri, Path(scratch) / "server.log") as server,
    ):
        client = MlflowClient(tracking_uri=server.url)
        experiment_id, run_ids = newest_run_per_row(client, args.experiment, args.seed)
        url = compare_url(server.url, experiment_id, run_ids)
        screenshot(chromium, url, args.output, tuple(args.size), args.wait_ms)
    keep_left(args.output, args.keep_width)
    print(f"wrote {args.output} ({len(run_ids)} runs: {url})")


if __name__ == "__main__":
    main()

"""Faults survived, nothing lost: an unreachable MLflow store, and stages stopped by SIGTERM or SIGKILL.

The worker crash with identical final metrics, and determinism, are in test_training.py; SIGTERM at
many moments of a stage's run is in test_sigterm.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvc_project import set_params
from layouts import write_cityscapes, write_gta5

from pipeline.config import load_config
from pipeline.data.shards import shard_name, verify_shards
from pipeline.distributed.runtime import (
    GCS_WAIT_DEFAULT_S,
    GCS_WAIT_VARIABLE,
    RayAddressError,
    _single_node_addresses,
    gcs_wait_seconds,
    require_listening,
)
from pipeline.distributed.tasks import start_task
from pipeline.tracking.mlflow_run import (
    Tracker,
    TrackingUnavailableError,
    logged_params,
    probe_tracking_uri,
    redact_credentials,
    tracking_available,
)
from stages.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("source", "target_train", "target_val")


def write_params(folder: Path, overrides: dict[str, object]) -> Path:
    path = folder / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    set_params(path, overrides)
    return path


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port where nothing listens, held by a bound socket that never listens (connecting is refused at
    once), so no other process can take it while the tests use it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def stage_command(stage: str, params: Path) -> list[str]:
    return [sys.executable, "-m", f"stages.{stage}", "--params", str(params)]


def environment() -> dict[str, str]:
    return dict(os.environ) | {"RAY_USAGE_STATS_ENABLED": "0"}


@pytest.mark.slow  # a stage process
def test_unreachable_tracking_store_fails_fast_before_any_training(closed_port, tmp_path):
    uri = f"http://127.0.0.1:{closed_port}"
    params = write_params(tmp_path, {"tracking.uri": uri})
    started = time.monotonic()
    result = subprocess.run(stage_command("warmup", params), cwd=ROOT, env=environment(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"error: stage warmup: MLflow tracking store {uri} is unreachable" in result.stderr
    assert "tracking.required: false" in result.stderr
    assert time.monotonic() - started < 60  # the MLflow client's own retries take minutes
    assert not (tmp_path / "models").exists() and not (tmp_path / "ray_results").exists()


def test_a_ray_address_where_nothing_listens_is_named_and_one_that_listens_passes(closed_port, monkeypatch):
    port = closed_port
    started = time.monotonic()
    with _single_node_addresses(), pytest.raises(RayAddressError) as error:  # resolved as 127.0.0.1
        require_listening(f"127.0.0.1:{port}", within_s=1.0)
    assert 1.0 <= time.monotonic() - started < 30
    message, address = str(error.value), f"127.0.0.1:{port}"
    assert message.startswith(f"RAY_ADDRESS={address}: no Ray cluster is listening at {address} (")
    assert "unset it to run on a local Ray runtime" in message
    with socket.socket() as server, _single_node_addresses():
        server.bind(("127.0.0.1", 0))
        server.listen()
        require_listening(f"127.0.0.1:{server.getsockname()[1]}", within_s=0.0)
    for resolved_by_ray in ("auto", f"ray://127.0.0.1:{port}"):  # left to ray.init: nothing is tried here
        require_listening(resolved_by_ray, within_s=0.0)
    for malformed in ("head", "head:port", "127.0.0.1:", ":6379", "127.0.0.1:70000"):
        with pytest.raises(RayAddressError, match=f"RAY_ADDRESS={malformed}: not host:port"):
            require_listening(malformed, within_s=0.0)
    monkeypatch.delenv(GCS_WAIT_VARIABLE, raising=False)
    assert gcs_wait_seconds() == GCS_WAIT_DEFAULT_S
    monkeypatch.setenv(GCS_WAIT_VARIABLE, "300")  # Ray's own budget, when the user set it
    assert gcs_wait_seconds() == 300.0


@pytest.mark.slow  # two stage processes
def test_a_stage_given_an_unreachable_ray_address_fails_fast_or_stops_on_sigterm(closed_port, tmp_path):
    """Without the check, `ray.init` retried for about 13 minutes and held a SIGTERM all that time (seen
    2026-12-02: a SIGTERM at 5 minutes took effect at 13 min 41 s)."""
    params = write_params(tmp_path, {"tracking.required": False})
    address = f"127.0.0.1:{closed_port}"
    unreachable = environment() | {"RAY_ADDRESS": address}
    command = stage_command("synthesize", params)  # Ray comes first in this stage
    result = subprocess.run(command, cwd=ROOT, env=unreachable | {GCS_WAIT_VARIABLE: "2"},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"error: stage synthesize: RAY_ADDRESS={address}: no Ray cluster is listening" in result.stderr
    assert "Traceback" not in result.stderr

    stage = subprocess.Popen(command, cwd=ROOT, env=unreachable, stderr=subprocess.PIPE, text=True)
    try:
        for line in stage.stderr:  # waits (GCS_WAIT_DEFAULT_S) after this line
            if "joining the Ray cluster" in line:
                break
        stage.send_signal(signal.SIGTERM)
        _, stderr = stage.communicate(timeout=30)  # a SIGTERM held by ray.init would wait for minutes
    finally:
        stage.kill()
    assert stage.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stage synthesize stopped by SIGTERM" in stderr
    assert not (tmp_path / "data" / "raw").exists()


def test_without_required_tracking_an_unreachable_store_is_skipped(closed_port, tmp_path):
    uri = f"http://127.0.0.1:{closed_port}"
    params = write_params(tmp_path, {"tracking.uri": uri, "tracking.required": False})
    tracker = Tracker(load_config(params), "stages", "run", "test")
    assert not tracker.active
    tracker.log_metrics({"loss": 1.0}, 1)  # no-ops, no error
    tracker.finish()


def test_probe_accepts_a_writable_sqlite_folder_and_refuses_a_closed_port(closed_port, tmp_path):
    assert probe_tracking_uri(f"sqlite:///{tmp_path}/stores/mlflow.db") is None
    assert probe_tracking_uri(f"http://127.0.0.1:{closed_port}", timeout=2) is not None


@pytest.fixture
def real_layout_project(tmp_path):
    """Enough real-layout images that preprocessing lasts a few seconds."""
    write_gta5(tmp_path / "gta5", count=48, size=(96, 160))
    write_cityscapes(tmp_path / "cityscapes", {"train": 24, "val": 8}, {"train": ["aa"], "val": ["bb"]},
                     size=(96, 160))  # fmt: skip
    return write_params(tmp_path, {
        "data.synthetic.enabled": False,
        "data.source.root": str(tmp_path / "gta5"),
        "data.target.root": str(tmp_path / "cityscapes"),
        "preprocess.rows_per_shard": 2,
        "preprocess.rows_per_row_group": 1,
    })  # fmt: skip


def start_and_stop_mid_write(params: Path, stop: signal.Signals) -> subprocess.CompletedProcess:
    """Start `preprocess`, wait until a split's staging folder exists (shards are being written),
    then send `stop`: SIGKILL to its whole process group (Ray too), other signals to the stage."""
    shards = params.parent / "data" / "shards"
    process = subprocess.Popen(stage_command("preprocess", params), cwd=ROOT, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(shards.glob(".*.staging/*.parquet")):
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(
                f"the stage ended (exit {process.returncode}) before it could be stopped:\n{stderr[-3000:]}"
            )
        assert time.monotonic() < deadline, "no shard was ever staged"
        time.sleep(0.02)
    if stop == signal.SIGKILL:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def partial_files(shards: Path) -> list[str]:
    """Anything a reader could mistake for output: a split folder without a valid manifest."""
    found = []
    for split in SPLITS:
        if (shards / split).exists():
            try:
                verify_shards(shards / split)
            except Exception as error:
                found.append(f"{split}: {error}")
    return found


@pytest.mark.slow
@pytest.mark.heavy  # make test-heavy: see docs/decisions.md, "`make test` and `make test-heavy`"
def test_sigkill_mid_write_leaves_no_partial_split_and_the_rerun_completes(real_layout_project, ray_head):
    """The stage runs on a local runtime of its own, killed with it (its whole process group); the rerun
    joins the session's Ray head, which spares it a runtime's start-up: what it must find is the data."""
    shards = real_layout_project.parent / "data" / "shards"
    result = start_and_stop_mid_write(real_layout_project, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    assert not partial_files(shards)  # at most a hidden staging folder, never a half split
    rerun = subprocess.run(stage_command("preprocess", real_layout_project), cwd=ROOT,
                           env=ray_head.driver_env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for split in SPLITS:
        assert verify_shards(shards / split).rows > 0
    assert not list(shards.glob(".*.staging")) and not list(shards.rglob("*.tmp"))


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_stage_naming_step_and_terms(tmp_path, ray_runtime, ray_head):
    """A learning rate that blows the weights up: the stage ends with one line naming the step and the
    loss terms, writes no model, and Ray Train's storage keeps the last good checkpoint. (Shards are
    written in this process; the stage joins the session's Ray head.)"""
    write_gta5(tmp_path / "gta5", count=8, size=(48, 80))
    write_cityscapes(tmp_path / "cityscapes", {"train": 4, "val": 2}, {"train": ["aa"], "val": ["bb"]},
                     size=(48, 80))  # fmt: skip
    params = write_params(tmp_path, {
        "data.synthetic.enabled": False,
        "data.source.root": str(tmp_path / "gta5"),
        "data.target.root": str(tmp_path / "cityscapes"),
        "preprocess.source_size": {"height": 40, "width": 64},
        "preprocess.target_size": {"height": 40, "width": 64},
        "model.width": 0.125,
        "train.batch_size": 2,
        "train.crop": {"height": 32, "width": 48},
        "train.optim.lr": 1.0e8,
        "train.checkpoint_every": 1,
        "train.loader_workers": 0,
        "warmup.steps": 50,
        "warmup.oracle": False,
        "distributed.cpus_per_worker": 1,
        "distributed.max_failures": 0,
    })  # fmt: skip
    preprocess(load_config(params))
    result = subprocess.run(stage_command("warmup", params), cwd=ROOT, env=ray_head.driver_env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    message = [line for line in result.stderr.splitlines() if line.startswith("error: stage warmup:")]
    assert message and "non-finite loss at step" in message[0] and "ce=" in message[0], result.stderr[-3000:]
    # (Ray's streamed worker logs still show the worker's traceback above and below: useful, not ours.)
    assert not (tmp_path / "models" / "warmup.pt").exists()
    assert list((tmp_path / "ray_results").rglob("state.pt")), "the last good checkpoint was not kept"


def test_a_task_started_beside_the_driver_gives_its_result_or_its_own_error(tmp_path, ray_runtime):
    # `start_task` (pseudo_label's re-estimation beside the labelling): the driver gets the task's own
    # exception, which names the file, not Ray's wrapper.
    assert start_task(shard_name, 3).result() == shard_name(3)
    pending = start_task(verify_shards, tmp_path / "missing_split")
    with pytest.raises(FileNotFoundError, match="missing_split/manifest.json: no manifest"):
        pending.result()


def test_credentials_in_the_tracking_uri_are_never_logged(closed_port, tmp_path):
    uri = f"http://alice:s3cret@127.0.0.1:{closed_port}/mlflow"
    assert redact_credentials(uri).startswith("http://***@127.0.0.1:") and "s3cret" not in redact_credentials(
        uri
    )
    assert redact_credentials("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    config = load_config(write_params(tmp_path, {"tracking.uri": uri, "tracking.required": False}))
    params = logged_params(config, {"ablation.row": "dass"})
    assert not any("s3cret" in str(value) or "alice" in str(value) for value in params.values())
    with pytest.raises(TrackingUnavailableError) as error:
        tracking_available(load_config(write_params(tmp_path, {"tracking.uri": uri})))
    assert "s3cret" not in str(error.value) and "alice" not in str(error.value)


WAITING_STAGE = """
import sys, time
from pathlib import Path
from pipeline.cli import run_stage

def wait_for_the_go(config):
    Path(sys.argv[1]).touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)

run_stage("waiting", wait_for_the_go, argv=["--params", sys.argv[3]])
"""


def test_sigusr1_prints_where_a_stage_waits_and_the_stage_goes_on(tmp_path):
    """`kill -USR1` is how a stage that seems stuck shows where it waits (tests/dag_build.py asks a run past
    its limit so): every thread's stack goes to stderr, naming the function the stage is in, and the stage
    then finishes normally."""
    ready, go, stderr = tmp_path / "ready", tmp_path / "go", tmp_path / "stderr"
    with stderr.open("w") as errors:
        stage = subprocess.Popen(
            [sys.executable, "-c", WAITING_STAGE, str(ready), str(go), str(ROOT / "params.yaml")],
            cwd=ROOT, stderr=errors, env=environment(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert stage.poll() is None, stderr.read_text()
                assert time.monotonic() < deadline, "the stage never started its body"
                time.sleep(0.05)
            stage.send_signal(signal.SIGUSR1)
            while "in wait_for_the_go" not in stderr.read_text():
                assert stage.poll() is None, stderr.read_text()
                assert time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.05)
            go.touch()
            assert stage.wait(timeout=60) == 0, stderr.read_text()
        finally:
            stage.kill()
    assert "most recent call first" in stderr.read_text()

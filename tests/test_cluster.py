"""The cluster path: real stages submitted with `ray job submit` to a real Ray head on this machine.

The head is the session's (tests/ray_head.py, started by conftest's `ray_head`): a real `ray start
--head` with token authentication, stopped at the end of the session and checked gone.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from dvc_project import dvc, make_project
from ray_head import VENV_BIN, http_status, listening, ray_cli, ray_tree
from test_network_binding import is_loopback

from pipeline.data.shards import verify_shards

SPLITS = ("source", "target_train", "target_val")


@pytest.mark.slow
@pytest.mark.heavy  # make test-heavy: see docs/decisions.md, "`make test` and `make test-heavy`"
def test_real_stages_run_as_a_ray_job_on_a_token_authenticated_head(tmp_path, ray_head):
    # Token authentication is on: the job API refuses a request without the token, or with another.
    assert http_status(f"{ray_head.dashboard}/api/jobs/") == 401
    assert http_status(f"{ray_head.dashboard}/api/jobs/", "not-the-token") == 403
    # The dashboard listens on 127.0.0.1 only (--dashboard-host=127.0.0.1).
    dashboard_sockets = [
        ip for ip, port in listening(ray_tree(ray_head.process)) if port == ray_head.dashboard_port
    ]
    assert dashboard_sockets and all(map(is_loopback, dashboard_sockets)), dashboard_sockets

    project = make_project(tmp_path / "project")
    # `--working-dir` uploads the code (without .git and what .gitignore lists) and every Ray worker
    # of the job imports it; the entrypoint starts in a temporary copy on the head. DVC must run in
    # the project itself, so that outputs and dvc.lock land there: the entrypoint changes into it.
    # That works because the project is on a filesystem every node sees at the same path (here the
    # head is this machine): on a real cluster data/, models/, ray_results/ must be on such a shared
    # filesystem, as docs/cluster.md says. `dvc repro preprocess` runs the real
    # stages `python -m stages.synthesize` and `python -m stages.preprocess`.
    script = " && ".join([
        'python -c "import sys; print(\'job python:\', sys.executable)"',
        f"cd {shlex.quote(str(project))}",
        "dvc repro preprocess",
    ])  # fmt: skip
    submission_id = "cluster-test-stages"
    submitted = ray_cli(ray_head.env, "job", "submit", "--address", ray_head.dashboard,
                        "--submission-id", submission_id, "--working-dir", str(project),
                        "--", "sh", "-c", script, timeout=300)  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-2000:]

    job_status = ray_cli(ray_head.env, "job", "status", "--address", ray_head.dashboard, submission_id)
    job_output = job_status.stdout + job_status.stderr
    assert job_status.returncode == 0 and f"Job '{submission_id}' succeeded" in job_output, job_output
    logs = ray_cli(ray_head.env, "job", "logs", "--address", ray_head.dashboard, submission_id).stdout

    # The job's python is this virtual environment's (PATH of `ray start`).
    printed = re.search(r"job python: (\S+)", logs)
    assert printed and Path(printed.group(1)).parent == VENV_BIN, logs[-3000:]
    # Both stages joined this head through RAY_ADDRESS (set by the job) instead of starting Ray.
    joined = re.findall(rf"Using address \S+:{ray_head.gcs_port} set in the environment variable RAY_ADDRESS",
                        logs)  # fmt: skip
    assert len(joined) == 2, logs[-3000:]
    assert "Started a local Ray instance" not in logs
    assert logs.count("Ray resources:") == 2
    assert "stage synthesize finished" in logs and "stage preprocess finished" in logs

    for split in SPLITS:
        assert verify_shards(project / "data" / "shards" / split).rows > 0
    dvc_status = dvc(project, "status", "preprocess")  # dvc.lock was written in the project
    assert "up to date" in dvc_status.stdout, dvc_status.stdout

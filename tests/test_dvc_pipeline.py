"""A real `dvc repro` of the DAG in a temporary git copy of the project."""

import ipaddress
import json

import psutil
import pytest
from dvc_project import dvc, make_project, set_params
from mlflow.tracking import MlflowClient

from pipeline.data.shards import Manifest, verify_shards
from pipeline.tracking.local_server import mlflow_server
from pipeline.training.adaptation_losses import ROWS


@pytest.mark.slow
def test_dvc_repro_runs_dag_then_nothing(tmp_path):
    project = make_project(tmp_path / "project")
    first = dvc(project, "repro")
    cells = [f"adapt@{row}-0" for row in ROWS]
    stages = ("synthesize", "preprocess", "warmup", "pseudo_label", *cells, "evaluate", "report", "sweep")
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout

    marker = json.loads((project / "data" / "raw" / "benchmark.json").read_text())
    assert marker["enabled"] is True
    assert len(list((project / "data" / "raw" / "gta5" / "images").glob("*.png"))) == 6
    assert len(list((project / "data" / "raw" / "synthia" / "GT" / "LABELS").glob("*.png"))) == 4
    assert len(list((project / "data" / "raw" / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))) == 4
    for split, rows in (("source", 6), ("target_train", 6), ("target_val", 4)):
        manifest = verify_shards(project / "data" / "shards" / split)
        assert manifest.rows == rows
    assert (project / "dvc.lock").is_file()
    assert (project / "models" / "warmup.pt").is_file() and (
        project / "models" / "oracle" / "oracle.pt"
    ).is_file()
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert set(evaluation) == {"source_only", "oracle"} | {f"{row}_seed0" for row in ROWS}
    ablation = json.loads((project / "metrics" / "ablation.json").read_text())
    assert list(ablation) == ["source_only", *ROWS, "oracle", "pseudo_labels"]
    assert ablation["dass"]["seeds"] == 1 and ablation["dass"]["miou"] == evaluation["dass_seed0"]["miou"]
    assert set(ablation["pseudo_labels"]) == {"static", "dynamic_nocal", "dynamic_cal", "hybrid"}
    assert "| + y_D (w/ cal.) = DASS |" in (project / "reports" / "ablation.md").read_text()
    assert set(evaluation["source_only"]) >= {"miou", "miou16", "miou13", "per_class_iou"}
    assert (project / "plots" / "qualitative.png").is_file()
    pseudo = json.loads((project / "metrics" / "pseudo_static.json").read_text())
    assert 0 <= pseudo["density"] <= 100 and pseudo["portion"] == 0.2
    assert Manifest.read(project / "data" / "shards" / "pseudo_static").rows == 6
    first_cell = json.loads((project / "metrics" / "adapt" / "fc_seed0.json").read_text())
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    logged = client.get_run(first_cell["mlflow_run_id"]).data.metrics  # evaluate logs into the cell's run
    assert logged["final.miou"] == evaluation["fc_seed0"]["miou"] and "final.iou.road" in logged
    sweep = json.loads((project / "metrics" / "sweep.json").read_text())
    assert len(sweep["trials"]) == 2 and sweep["best"]["value"] is not None  # random search, 2 samples
    assert (project / "reports" / "sweep.md").is_file()
    rendered = json.loads(dvc(project, "plots", "show", "--json").stdout)
    assert {"plots/per_class_iou.json", "plots/confusion_source_only.json"} <= set(rendered["data"])
    assert not rendered.get("errors"), rendered.get("errors")

    check_runs_through_server(project, tmp_path / "mlflow_server.log")

    second = dvc(project, "repro")
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout.lower()

    # Changing an evaluation-only param reruns evaluate (and the report that reads it) alone.
    set_params(project / "params.yaml", {"evaluate.panel_images": 1})
    third = dvc(project, "repro")
    assert "Running stage 'evaluate'" in third.stdout
    for stage in ("synthesize", "preprocess", "warmup", "pseudo_label", "adapt@dass-0"):
        assert f"Running stage '{stage}'" not in third.stdout
    assert len(Manifest.read(project / "data" / "shards" / "source").shards) == 2

    # A swept param (τ) would rerun the cells, the sweep and what reads them, nothing upstream.
    set_params(project / "params.yaml", {"adapt.tau": 0.2})
    dry = dvc(project, "repro", "--dry")
    would_run = {line.split("'")[1] for line in dry.stdout.splitlines() if line.startswith("Running stage")}
    assert {f"adapt@{row}-0" for row in ROWS} | {"sweep"} <= would_run
    assert not would_run & {"synthesize", "preprocess", "warmup", "pseudo_label"}, would_run
    set_params(project / "params.yaml", {"adapt.tau": 0.1})

    # Two CRST rounds with target BatchNorm statistics: pseudo_label and the cell rerun, nothing upstream.
    set_params(project / "params.yaml", {"adapt.rounds": 2, "adapt.bn_statistics": "target"})
    fourth = dvc(project, "repro", "adapt@dass-0")
    ran = {line.split("'")[1] for line in fourth.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"pseudo_label", "adapt@dass-0"}
    pseudo = json.loads((project / "metrics" / "pseudo_static.json").read_text())
    assert pseudo["bn_statistics"] == "target" and pseudo["bn_images"] == 6
    cell = json.loads((project / "metrics" / "adapt" / "dass_seed0.json").read_text())
    assert cell["rounds"] == 2 and cell["steps"] == 4
    assert [r["round"] for r in cell["relabelled"]] == [1] and cell["relabelled"][0]["portion"] == 0.25
    assert not (project / "data" / "shards" / "pseudo_rounds" / "dass_seed0").exists()  # scratch removed
    run = client.get_run(cell["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["ablation.row"] == "dass"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert "relabel.density" in run.data.metrics


@pytest.mark.slow
def test_stage_error_is_one_clear_line(tmp_path):
    project = make_project(
        tmp_path / "project", {"data.synthetic.enabled": False, "data.source.root": "/nonexistent/gta"}
    )
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0
    combined = result.stdout + result.stderr
    assert "error: stage preprocess: gta5 root /nonexistent/gta: missing folder images/" in combined
    assert "Traceback" not in combined


def check_runs_through_server(project, log):
    """A real `mlflow server` on 127.0.0.1 over the store the DAG wrote serves the ablation cells and the
    sweep's parent and child runs; it listens on loopback only and stops by its pid."""
    with mlflow_server(f"sqlite:///{project / 'mlflow.db'}", log) as server:
        addresses = listening_addresses(server.pid)
        assert ("127.0.0.1", server.port) in addresses
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in addresses), addresses
        client = MlflowClient(tracking_uri=server.url)
        ablation = client.get_experiment_by_name("dass-ablation")
        cells = client.search_runs([ablation.experiment_id], "params.`ablation.seed` = '0'")
        assert {run.data.params["ablation.row"] for run in cells} == set(ROWS)
        assert all("final.miou" in run.data.metrics for run in cells)
        sweep = client.get_experiment_by_name("dass-sweep")
        parents = client.search_runs([sweep.experiment_id], "tags.`sweep.role` = 'parent'")
        assert len(parents) == 1
        children = client.search_runs([sweep.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")  # fmt: skip
        assert len(children) == 2 and all(run.data.params.keys() >= {"adapt.tau"} for run in children)
        pid = server.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every listening TCP socket of `pid` and its descendants (uvicorn workers)."""
    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found

"""A real `dvc repro` of the whole DAG in a temporary git copy of the project, and what it leaves.

One project is reproduced once (`dag`), and a copy of it is then rerun with two CRST rounds; both run in
the background while the rest of the suite runs (conftest's `dag_build`, tests/dag_build.py, which also
orders this module near the end). The tests below read what those runs wrote; the last ones change
params and check what would rerun. The stages join the session's Ray head
(`ray_head.driver_env`: RAY_ADDRESS, as under `ray job submit`) instead of each starting a local Ray
runtime; the local-runtime path of a stage is exercised by test_sigterm.py, test_reliability.py,
test_bad_inputs.py and test_network_binding.py. Tests run in file order: keep the ones that change
params last.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from dag_build import CRST_TARGET, PARALLEL_CELLS, TWO_WORKER_CELL
from dvc_project import TINY_PARAMS, dvc, make_project, set_params
from mlflow.tracking import MlflowClient

from pipeline.config import load_config
from pipeline.data.shards import Manifest, verify_shards
from pipeline.evaluation.report import NOT_ROWS
from pipeline.evaluation.sweep_report import run_status
from pipeline.predict import predict
from pipeline.tracking.local_server import mlflow_server

ROWS = TINY_PARAMS["ablation.rows"]
CELLS = [f"adapt@{row}-0" for row in ROWS]
UPSTREAM = ("synthesize", "preprocess", "warmup", "pseudo_label")

# The first test also waits for `dag` (under 2 minutes built alone on an idle day): at least 3× that on a
# slow one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@dataclass(frozen=True)
class Dag:
    project: Path
    env: dict[str, str]
    first_output: str

    def repro(self, *args: str) -> str:
        return dvc(self.project, "repro", *args, env=self.env).stdout

    def json(self, relative: str) -> dict:
        return json.loads((self.project / relative).read_text())

    @property
    def mlflow(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.project / 'mlflow.db'}")


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def dag(dag_build) -> Dag:
    return Dag(dag_build.project, dag_build.env, dag_build.first().output)


def test_first_repro_runs_every_stage_once_on_the_head(dag):
    assert stages_run(dag.first_output) == {*UPSTREAM, *CELLS, "evaluate", "report", "sweep"}
    assert (dag.project / "dvc.lock").is_file()


def test_ray_train_runs_start_no_ray_data_actor(dag, dag_build):
    """The DAG's Ray Train runs (their controllers are listed on the head) never started Ray Data's
    DatasetManager: `ShardTrainer` leaves it out, since the workers read their own shards."""
    classes = {actor["class_name"] for actor in dag_build.head.state("actors")}
    assert "TrainController" in classes and "DatasetManager" not in classes, classes


def test_data_stages_write_the_benchmark_in_real_layouts_and_shards(dag):
    raw = dag.project / "data" / "raw"
    assert json.loads((raw / "benchmark.json").read_text())["enabled"] is True
    assert len(list((raw / "gta5" / "images").glob("*.png"))) == 6
    assert len(list((raw / "synthia" / "GT" / "LABELS").glob("*.png"))) == 4
    assert len(list((raw / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))) == 4
    for split, rows in (("source", 6), ("target_train", 6), ("target_val", 4)):
        assert verify_shards(dag.project / "data" / "shards" / split).rows == rows
    assert len(Manifest.read(dag.project / "data" / "shards" / "source").shards) == 2


def test_models_labels_evaluation_and_report(dag):
    assert (dag.project / "models" / "warmup.pt").is_file()
    assert (dag.project / "models" / "oracle" / "oracle.pt").is_file()
    pseudo = dag.json("metrics/pseudo_static.json")
    assert 0 <= pseudo["density"] <= 100 and pseudo["portion"] == 0.2
    assert Manifest.read(dag.project / "data" / "shards" / "pseudo_static").rows == 6
    evaluation = dag.json("metrics/evaluate.json")
    assert set(evaluation) == {"source_only", "source_only_target_bn", "oracle"} | {
        f"{row}_seed0" for row in ROWS
    }
    assert set(evaluation["source_only"]) >= {"miou", "miou16", "miou13", "per_class_iou"}
    ablation = dag.json("metrics/ablation.json")
    assert [name for name in ablation if name not in NOT_ROWS] == ["source_only", "source_only_target_bn",
                                                                   *ROWS, "oracle"]  # fmt: skip
    assert set(ablation) - set(NOT_ROWS) == {"source_only", "source_only_target_bn", *ROWS, "oracle"}
    assert set(NOT_ROWS) <= set(ablation)
    assert list(ablation["feature_alignment"]) == [row for row in ablation if row not in NOT_ROWS]
    assert set(evaluation["dass_seed0"]["feature_alignment"]) == {"per_class", "mean"}
    assert (dag.project / "plots" / "feature_alignment.png").is_file()
    assert ablation["dass"]["seeds"] == 1 and ablation["dass"]["miou"] == evaluation["dass_seed0"]["miou"]
    assert set(ablation["pseudo_labels"]) == {"static", "dynamic_nocal", "dynamic_cal", "hybrid"}
    assert set(ablation["pseudo_labels_matched_density"]) == {"dynamic_nocal", "dynamic_cal"}
    assert set(ablation["pseudo_labels_per_class"]["hybrid"]["road"]) == {"precision", "recall"}
    assert (dag.project / "reports" / "pseudo_labels_per_class.png").is_file()
    assert (dag.project / "models" / "source_only_target_bn.pt").is_file()
    assert "| + y_D (w/ cal.) = DASS |" in (dag.project / "reports" / "ablation.md").read_text()
    assert (dag.project / "plots" / "qualitative.png").is_file()
    coverage = dag.json("metrics/label_coverage.json")
    static = dag.json("metrics/pseudo_static.json")["per_class"]
    assert coverage["per_class"]["road"]["recall"] == static["road"]["recall"]
    assert coverage["per_class"]["road"]["oracle_iou"] == evaluation["oracle"]["per_class_iou"]["road"]
    assert "## Static-label coverage" in (dag.project / "reports" / "ablation.md").read_text()


def test_evaluation_logs_the_static_label_coverage_to_mlflow(dag):
    coverage = dag.json("metrics/label_coverage.json")
    runs = dag.mlflow.search_runs(
        [dag.mlflow.get_experiment_by_name("dass-stages").experiment_id],
        "tags.dvc_stage = 'evaluate'",
    )
    logged = runs[0].data.metrics
    assert logged["static_labels.recall.road"] == coverage["per_class"]["road"]["recall"]
    assert logged["static_labels.learnable"] == coverage["learnable"]


def test_normalisation_only_model_from_the_task_beside_the_labelling_is_adabn_of_the_warmup(dag):
    # Under `batch` (the default) and `frozen` the stage re-estimates the statistics in a Ray task while
    # target train is labelled; its model must be what the re-estimation gives in this process, and the
    # labeller the warmup itself.
    from stages.pseudo_label import normalisation_only_model

    config = load_config(dag.project / "params.yaml")
    pseudo = dag.json("metrics/pseudo_static.json")
    assert pseudo["bn_statistics"] == "batch" and pseudo["bn_images"] == 6
    expected, images = normalisation_only_model(config)
    written = torch.load(dag.project / "models" / "source_only_target_bn.pt", weights_only=True)
    assert images == 6 and written.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(written[key], value, rtol=0, atol=1e-6, msg=key)
    warmup = torch.load(dag.project / "models" / "warmup.pt", weights_only=True)
    assert any(not torch.equal(written[key], warmup[key]) for key in warmup if key.endswith("running_mean"))
    labeller = torch.load(dag.project / "models" / "pseudo_labeller.pt", weights_only=True)
    assert all(torch.equal(labeller[key], warmup[key]) for key in warmup)


def test_evaluation_is_logged_into_each_cells_mlflow_run(dag):
    cell = dag.json("metrics/adapt/base_seed0.json")
    logged = dag.mlflow.get_run(cell["mlflow_run_id"]).data.metrics
    assert logged["final.miou"] == dag.json("metrics/evaluate.json")["base_seed0"]["miou"]
    assert "final.iou.road" in logged


def test_a_cells_model_fetched_from_its_mlflow_run_predicts(dag, tmp_path, ray_runtime):
    """Each cell's run holds its model and the params that rebuild it (artifacts `model/`); fetched as a
    user would from the UI, they run `predict` as they are, without the project."""
    cell = dag.json("metrics/adapt/dass_seed0.json")
    client = dag.mlflow
    listed = {item.path for item in client.list_artifacts(cell["mlflow_run_id"], "model")}
    assert listed == {"model/dass_seed0.pt", "model/params.yaml"}
    fetched = Path(client.download_artifacts(cell["mlflow_run_id"], "model", str(tmp_path)))
    assert (fetched / "dass_seed0.pt").read_bytes() == (
        dag.project / "models/adapt/dass_seed0.pt"
    ).read_bytes()
    images = dag.project / "data" / "raw" / "cityscapes" / "leftImg8bit" / "val"
    summary = predict(
        load_config(fetched / "params.yaml"), fetched / "dass_seed0.pt", str(images), tmp_path / "out"
    )
    assert (
        summary["images"] == 4
        and len(list((tmp_path / "out" / "labelIds").rglob("*_pred_labelIds.png"))) == 4
    )


def test_dvc_plots_render(dag):
    rendered = json.loads(dvc(dag.project, "plots", "show", "--json", env=dag.env).stdout)
    assert {"plots/per_class_iou.json", "plots/confusion_source_only.json",
            "reports/pseudo_labels_per_class.json"} <= set(rendered["data"])  # fmt: skip
    assert not rendered.get("errors"), rendered.get("errors")


def test_sweep_runs_tune_trials_with_mlflow_parent_and_children(dag):
    """Ray Tune grid of two trials (ASHA on, two at a time: the default), each a TorchTrainer scored on the
    held-out slice."""
    # Ray Train's PlacementGroupCleaner frees a finished trial's CPUs through the state API (the dashboard):
    # without it the next trials wait forever for workers.
    assert "Failed to query Ray Train Controller actor state" not in dag.first_output
    summary = dag.json("metrics/sweep.json")
    assert summary["selection_labels"] == "oracle" and summary["holdout_images"] == 2
    assert sorted(t["params"]["ema_momentum"] for t in summary["trials"]) == [0.5, 0.99]
    for trial in summary["trials"]:
        assert trial["error"] is None and 0 <= trial["value"] <= 100
        steps = [step for step, _ in trial["history"]]
        assert steps == [2, 4][: len(steps)] and trial["stopped_early"] == (steps[-1] < 4)
    assert any(not trial["stopped_early"] for trial in summary["trials"])  # ASHA keeps the leader
    assert summary["best"]["value"] == summary["trials"][0]["value"]
    assert (dag.project / "reports" / "sweep.png").stat().st_size > 0
    assert "| rank | trial | τ | λ | 𝒯 |" in (dag.project / "reports" / "sweep.md").read_text()

    client = dag.mlflow
    experiment = client.get_experiment_by_name("dass-sweep")
    parents = client.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.metrics["best.holdout.miou"] == summary["best"]["value"]
    assert parent.data.params["best.adapt.ema_momentum"] == str(summary["best"]["params"]["ema_momentum"])
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {run.info.run_id for run in children} == {t["mlflow_run_id"] for t in summary["trials"]}
    # Every trial's run has ended (Tune kills a stopped trial before it can end its run: the sweep does),
    # as of its last metric. (Whether the two runs' windows overlap is left out: a trial's run lasts about a
    # second here, and the two worker groups' start-ups can differ by more under the suite's load.)
    assert all(run.info.end_time >= run.info.start_time for run in children)
    for trial in summary["trials"]:
        run = client.get_run(trial["mlflow_run_id"])
        assert float(run.data.params["adapt.ema_momentum"]) == trial["params"]["ema_momentum"]
        assert run.data.params["adapt.steps"] == "4" and run.data.params["sweep.trial"] == trial["trial"]
        history = client.get_metric_history(run.info.run_id, "holdout.miou")
        logged = [(m.step, round(m.value, 2)) for m in sorted(history, key=lambda m: m.step)]
        # The summary agrees with MLflow even for a trial ASHA stopped that evaluated again, even to its
        # last step, before the stop reached it (trials run side by side; seen under the suite's load,
        # 2026-12-02): Tune dropped those reports, and the summary takes them from the trial's run.
        assert logged == [tuple(h) for h in trial["history"]], (trial, logged)
        assert run.info.status == run_status(trial), (run.info.status, trial, logged)
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.json", "sweep.md", "sweep.png"} <= artifacts


def test_a_real_mlflow_server_serves_the_runs_on_loopback_only(dag, tmp_path):
    """A real `mlflow server` on 127.0.0.1 over the store the DAG wrote serves the ablation cells and the
    sweep's parent and child runs; it listens on loopback only and stops by its pid."""
    with mlflow_server(f"sqlite:///{dag.project / 'mlflow.db'}", tmp_path / "server.log") as server:
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


# Code the adaptation cells never run: editing it must leave every cell up to date (GPU-days at paper scale).
NOT_CELL_CODE = (
    "pipeline/evaluation/plots.py",
    "pipeline/evaluation/panels.py",
    "pipeline/evaluation/report.py",
    "pipeline/evaluation/sweep_report.py",
    "pipeline/training/sweep.py",
    "pipeline/distributed/tune.py",
    "pipeline/tracking/local_server.py",
    "pipeline/predict.py",
)


def test_editing_plots_reports_the_sweep_or_the_local_server_leaves_every_cell_up_to_date(dag):
    def cells_changed(edited: tuple[str, ...]) -> set[str]:
        originals = {path: (dag.project / path).read_text() for path in edited}
        try:
            for path in edited:
                (dag.project / path).write_text(originals[path] + "\n# edited\n")
            status = json.loads(dvc(dag.project, "status", "--json", *CELLS, env=dag.env).stdout or "{}")
        finally:
            for path, text in originals.items():
                (dag.project / path).write_text(text)
        return set(status)

    assert cells_changed(NOT_CELL_CODE) == set()
    assert cells_changed(("pipeline/training/loop.py",)) == set(CELLS)  # not vacuous: code the cells run


def test_result_neutral_params_leave_every_cell_up_to_date(dag):
    """Where checkpoints go, how often a run may restart, logs and checkpoints change no result (a restart
    replays it; the last step always checkpoints)."""
    params = dag.project / "params.yaml"
    original = params.read_text()
    try:
        set_params(params, {"distributed.storage": "elsewhere", "distributed.max_failures": 5,
                            "distributed.placement_strategy": "SPREAD", "train.log_every": 7,
                            "train.checkpoint_every": 9})  # fmt: skip
        status = json.loads(dvc(dag.project, "status", "--json", *CELLS, env=dag.env).stdout or "{}")
    finally:
        params.write_text(original)
    assert status == {}


def test_a_second_repro_runs_nothing(dag):
    output = dag.repro()
    assert "Running stage" not in output and "up to date" in output.lower()


def test_a_swept_param_would_rerun_the_cells_and_the_sweep_and_nothing_upstream(dag):
    tau = yaml.safe_load((dag.project / "params.yaml").read_text())["adapt"]["tau"]
    set_params(dag.project / "params.yaml", {"adapt.tau": tau * 2})
    try:
        would_run = stages_run(dag.repro("--dry"))
    finally:
        set_params(dag.project / "params.yaml", {"adapt.tau": tau})
    assert {*CELLS, "sweep"} <= would_run
    assert not would_run & set(UPSTREAM), would_run


def test_an_evaluation_param_would_rerun_evaluate_and_what_reads_it_alone(dag):
    set_params(dag.project / "params.yaml", {"evaluate.panel_images": 1})
    try:
        would_run = stages_run(dag.repro("--dry"))
    finally:
        set_params(
            dag.project / "params.yaml", {"evaluate.panel_images": TINY_PARAMS["evaluate.panel_images"]}
        )
    assert "evaluate" in would_run and would_run <= {"evaluate", "report"}, would_run


@pytest.mark.heavy
@pytest.mark.dag_runs("crst")
def test_crst_rounds_rerun_the_labeller_and_the_cell_only(dag_build):
    """Two CRST rounds with domain-specific BatchNorm (a copy of `dag`'s project with CRST_PARAMS, `dvc
    repro adapt@dass-0`): pseudo_label and the cell rerun, nothing upstream."""
    rerun = dag_build.crst()
    crst = Dag(rerun.project, dag_build.env, rerun.output)
    assert stages_run(crst.first_output) == {"pseudo_label", CRST_TARGET}
    pseudo = crst.json("metrics/pseudo_static.json")
    assert pseudo["bn_statistics"] == "per_domain" and pseudo["bn_images"] == 6 and pseudo["bn_layers"] > 0
    labeller = torch.load(crst.project / "models" / "pseudo_labeller.pt", weights_only=True)
    normalisation_only = torch.load(crst.project / "models" / "source_only_target_bn.pt", weights_only=True)
    for key, value in normalisation_only.items():  # the labeller's target statistics are AdaBN's
        if key.endswith("running_mean"):
            torch.testing.assert_close(labeller[key.replace("running_mean", "target_running_mean")], value)
    cell = crst.json("metrics/adapt/dass_seed0.json")
    assert cell["rounds"] == 2 and cell["steps"] == 4
    assert [r["round"] for r in cell["relabelled"]] == [1] and cell["relabelled"][0]["portion"] == 0.25
    assert not (crst.project / "data" / "shards" / "pseudo_rounds" / "dass_seed0").exists()  # scratch removed
    run = crst.mlflow.get_run(cell["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["ablation.row"] == "dass"
    assert [m.step for m in crst.mlflow.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert "relabel.density" in run.data.metrics


@pytest.mark.heavy
@pytest.mark.dag_runs("parallel")
def test_pending_cells_run_side_by_side_write_what_repro_wrote_and_are_committed(dag, dag_build):
    """`python -m stages.adapt_all` in a copy of `dag`'s project whose cells PARALLEL_CELLS lost their
    outputs, with no head (a local runtime of its own, which its cells join on loopback): both run at once
    (each cell's stage process, from its start to its metrics file, overlaps the other's), each writes the
    model `dvc repro` wrote one cell after another, bit for bit, and `dvc commit` leaves every cell up to
    date."""
    done = dag_build.parallel()
    assert f"{len(PARALLEL_CELLS)} cells trained and committed" in done.output, done.output[-3000:]
    side_by_side = Dag(done.project, dag_build.env, done.output)
    windows = []
    for row, seed in PARALLEL_CELLS:
        name = f"models/adapt/{row}_seed{seed}.pt"
        assert (side_by_side.project / name).read_bytes() == (dag.project / name).read_bytes(), name
        metrics = side_by_side.project / f"metrics/adapt/{row}_seed{seed}.json"
        cell = json.loads(metrics.read_text())
        assert side_by_side.mlflow.get_run(cell["mlflow_run_id"]).info.status == "FINISHED"
        end = metrics.stat().st_mtime  # the stage writes its metrics last; "seconds" is its whole run
        windows.append((end - cell["seconds"], end))
    (_, first_end), (second_start, _) = sorted(windows)
    assert second_start < first_end, f"the cells ran one after another: {windows}"
    status = json.loads(dvc(done.project, "status", "--json", *CELLS, env=dag_build.env).stdout or "{}")
    assert status == {}, status


@pytest.mark.heavy
@pytest.mark.dag_runs("two_nodes")
def test_a_cell_on_two_nodes_survives_losing_one_and_matches_one_node(dag_build):
    """A second node joins the head (`ray start --address`, token authentication, 1 CPU); a 2-worker cell
    submitted with `ray job submit` (placement SPREAD) puts one Ray Train worker on each node, reading
    the project's shards and checkpointing to `distributed.storage`. After its first checkpoint the second
    node's processes are killed: Ray Train restarts the run on the node left (`distributed.max_failures`)
    from that checkpoint, and the cell ends with the same model, bit for bit, as the same cell on two
    workers of one node (TWO_WORKER_PARAMS). Both runs are made by the DAG build in the background
    (tests/dag_build.py: `_two_nodes`); this test reads what they left."""
    reference = dag_build.two_workers()
    run = dag_build.two_nodes()
    facts = run.facts
    assert facts["worker_nodes"] == sorted([facts["head_node"], facts["second_node"]]), facts
    assert facts["left_after_kill"] == [], facts
    row, seed = TWO_WORKER_CELL
    model = f"models/adapt/{row}_seed{seed}.pt"
    assert (run.project / model).read_bytes() == (reference.project / model).read_bytes()
    run_id = json.loads((run.project / f"metrics/adapt/{row}_seed{seed}.json").read_text())["mlflow_run_id"]
    restarts = Dag(run.project, dag_build.env, "").mlflow.get_metric_history(run_id, "restarted_from_step")
    assert len(restarts) == 1 and restarts[0].value >= 2, run.output[-4000:]


def test_stage_error_is_one_clear_line(tmp_path):
    project = make_project(
        tmp_path / "project", {"data.synthetic.enabled": False, "data.source.root": "/nonexistent/gta"}
    )
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0
    combined = result.stdout + result.stderr
    assert "error: stage preprocess: gta5 root /nonexistent/gta: missing folder images/" in combined
    assert "Traceback" not in combined


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

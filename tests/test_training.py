"""The training loop, the optimiser schedule, and real Ray Train runs (2 gloo workers, restart)."""

import dataclasses
import math
import platform
from pathlib import Path

import pytest
import ray
import torch
import yaml
from layouts import write_cityscapes, write_gta5
from mlflow.tracking import MlflowClient
from ray.util.state import list_actors

from pipeline.config import config_from_dict, load_config
from pipeline.distributed.worker_api import CHECKPOINT_FILE, run_in_process
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.evaluation.protocols import protocol_metrics
from pipeline.models.configured import build_model
from pipeline.models.pretrained import load_segmentor_state, write_checkpoint
from pipeline.training.adapt import TwoDomains
from pipeline.training.loop import LoopHooks, NonFiniteLossError, train
from pipeline.training.optim import build_optimizer, poly_factor
from pipeline.training.supervised import SupervisedJob, supervised_worker, train_supervised, trained_weights
from stages.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]


def test_poly_factor():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0


def test_head_learning_rate_is_multiplied():
    config = load_config(ROOT / "params.yaml")
    optimizer = build_optimizer(build_model(config), config.train.optim)
    backbone, head = optimizer.param_groups
    assert head["lr"] == pytest.approx(backbone["lr"] * config.train.optim.head_lr_multiplier)
    assert len(backbone["params"]) > len(head["params"]) > 0


def test_adaptation_optimizer_keeps_the_backbone_at_the_base_rate():
    """The adaptation worker builds its optimizer on the two-domain wrapper (and DDP or torch.compile may
    wrap that again): the backbone must still get `adapt.lr` and only the head the multiplied rate.
    (A name-prefix test once put every parameter in the head group, at 10× the rate.)"""
    config = load_config(ROOT / "params.yaml")
    segmentor = build_model(config)
    stems = [segmentor.backbone, *([segmentor.target_stem] if segmentor.target_stem is not None else [])]
    expected = {id(p) for stem in stems for p in stem.parameters() if p.requires_grad}
    for wrapped in (TwoDomains(segmentor), torch.nn.Sequential(TwoDomains(segmentor))):
        optim = dataclasses.replace(config.train.optim, lr=config.adapt.lr)
        backbone, head = build_optimizer(wrapped, optim).param_groups
        assert {id(p) for p in backbone["params"]} == expected
        assert backbone["lr"] == pytest.approx(config.adapt.lr)
        assert head["lr"] == pytest.approx(config.adapt.lr * optim.head_lr_multiplier)
        assert len(head["params"]) > 0


def test_non_finite_loss_names_step_and_terms():
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([{"params": [weight], "initial_lr": 0.1}], lr=0.1)
    checkpoints = []

    def losses(step):
        bad = torch.tensor(float("nan")) if step == 3 else torch.tensor(0.0)
        return {"ce": (weight**2).sum(), "contrast": weight.sum() * 0 + bad}

    hooks = LoopHooks(checkpoint=lambda step, metrics: checkpoints.append(step), checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3: ce=.*, contrast=nan"):
        train(losses, optimizer, total_steps=10, poly_power=0.9, hooks=hooks)
    assert checkpoints == [2]  # the last good checkpoint is before the bad step


def test_loop_logs_and_finishes():
    weight = torch.nn.Parameter(torch.tensor([3.0]))
    optimizer = torch.optim.SGD([{"params": [weight], "initial_lr": 0.1}], lr=0.1)
    logged = []
    hooks = LoopHooks(log=lambda step, metrics: logged.append((step, metrics)), log_every=5)
    result = train(lambda step: {"ce": (weight**2).sum()}, optimizer, 10, 0.9, hooks=hooks)
    assert [step for step, _ in logged] == [5, 10]
    assert result.steps == 10 and abs(weight.item()) < 3.0
    assert math.isclose(logged[0][1]["loss"], logged[0][1]["ce"])


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, ray_runtime):
    root = tmp_path_factory.mktemp("training")
    write_gta5(root / "gta5", count=8, size=(48, 80))
    write_cityscapes(
        root / "cityscapes", {"train": 8, "val": 4}, {"train": ["aa"], "val": ["cc"]}, size=(48, 80)
    )
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["synthetic"]["enabled"] = False
    raw["data"]["source"] = {"name": "gta5", "root": str(root / "gta5")}
    raw["data"]["target"]["root"] = str(root / "cityscapes")
    size = {"height": 40, "width": 64}
    raw["preprocess"] |= {"source_size": size, "target_size": size,
                          "rows_per_shard": 4, "rows_per_row_group": 2}  # fmt: skip
    raw["train"] |= {
        "crop": {"height": 32, "width": 48},
        "batch_size": 2,
        "log_every": 1,
        "checkpoint_every": 2,
    }
    raw["model"]["width"] = 0.125
    raw["warmup"]["steps"] = 4
    # One worker: a crash restarts the whole worker group either way (DDP over two gloo workers is
    # tested in test_adaptation_distributed.py and by the DAG's cells).
    raw["distributed"] |= {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 1}
    config = config_from_dict(raw, project_root=root)
    preprocess(config)
    return config


def run_without_ray(job: SupervisedJob, folder: Path) -> dict:
    """The final checkpoint's state of `job`'s worker function run in this process, without Ray."""
    threads = torch.get_num_threads()  # the worker sets its own; this process's other tests keep theirs
    try:
        session = run_in_process(supervised_worker, {"job": job}, torch.device("cpu"), folder)
    finally:
        torch.set_num_threads(threads)
    return torch.load(session.checkpoints[-1] / CHECKPOINT_FILE, weights_only=True)


@pytest.mark.slow
@pytest.mark.heavy  # make test-heavy: see docs/decisions.md, "`make test` and `make test-heavy`"
def test_a_worker_crash_ends_with_the_metrics_of_an_uninterrupted_run(tiny_project, tmp_path):
    """A worker dies right after the step-2 checkpoint; Ray Train restarts from it, replays the data
    order, and the final model and its target-val metrics equal those of an uninterrupted run. The
    uninterrupted run is the same worker function without Ray (`run_in_process`, one rank, as
    `benchmarks.gpu_check` runs it): so this also shows that Ray Train adds nothing to a worker's
    result, and that two runs of the same seed and params give identical weights on CPU (two Ray
    Train runs give identical models in test_dvc_pipeline.py: `adapt_all` against `dvc repro`)."""
    config = tiny_project
    marker = tmp_path / "crashed"
    job = SupervisedJob(config, "source_only", "source", "source", "warmup")
    summary = train_supervised(job, tmp_path / "crashed.pt", crash_once={"step": 2, "marker": str(marker)})
    assert marker.exists(), "the fault was not injected"
    assert summary["steps"] == 4
    assert summary["memory.peak_rss_mb"] > 0  # the worker's peak RSS reaches metrics/warmup.json
    write_checkpoint(trained_weights(run_without_ray(job, tmp_path / "in_process"), job.domain),
                     tmp_path / "straight.pt")  # fmt: skip

    crashed = torch.load(tmp_path / "crashed.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert crashed.keys() == straight.keys()
    different = [key for key in crashed if not torch.equal(crashed[key], straight[key])]
    assert not different, f"restarted run differs from the uninterrupted one in {different[:5]}"
    metrics = [protocol_metrics(evaluate_model(config, tmp_path / f"{name}.pt", 0)[0], "gta5")
               for name in ("crashed", "straight")]  # fmt: skip
    assert metrics[0] == metrics[1]

    # MLflow: one run per execution (the restarted workers continue the crashed execution's run).
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(f"{config.tracking.experiment}-stages")
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    for run in runs:
        print(run.info.run_id, run.info.status, run.data.metrics)
    assert [run.info.status for run in runs] == ["FINISHED"] * 2
    assert runs[0].data.metrics.get("restarted_from_step") == 2, "the restart did not resume the checkpoint"
    run = runs[0]
    assert run.info.run_name == "gta5-cityscapes_source_only_seed0"
    assert run.data.params["warmup.steps"] == "4" and run.data.params["run.model"] == "source_only"
    assert run.data.tags["dvc_stage"] == "warmup" and run.data.tags["version.torch"] == torch.__version__
    assert run.data.tags["version.python"] == platform.python_version()
    assert run.data.tags["version.cuda"] == (torch.version.cuda or "none")
    history = client.get_metric_history(run.info.run_id, "ce")
    assert [point.step for point in history] == [1, 2, 3, 4] and all(math.isfinite(p.value) for p in history)
    assert run.data.metrics["memory.peak_rss_mb"] > 0 and "train_seconds" in run.data.metrics


@pytest.mark.slow
def test_bf16_channels_last_storage_uri_and_target_stem_in_one_ray_train_run(tiny_project, tmp_path):
    """Three independent switches through the real supervised worker, in one run (each run costs tens of
    seconds of worker start-up here):

    - train.precision bf16 + channels_last: finite losses, and the written model is a float32 state dict
      that loads into the fp32 model evaluation builds;
    - distributed.storage as a URI (here file://, resolved by pyarrow.fs like s3:// or gs://) is where Ray
      Train writes its checkpoints, and the stage reads the final state back from there;
    - model.target_stem: the source-only run never trains the target stem, so its model file leaves it
      out and loading copies the trained source stem into it: target images then get the source model's
      prediction (not one through an untrained stem).

    And the local runtime's runs start no PreemptionWatcher (one machine: nothing drains its node).
    """
    store = tmp_path / "object-store"
    config = dataclasses.replace(
        tiny_project,
        train=dataclasses.replace(tiny_project.train, precision="bf16", channels_last=True),
        distributed=dataclasses.replace(tiny_project.distributed, storage=store.as_uri(), num_workers=1),
        model=dataclasses.replace(tiny_project.model, target_stem=True),
        tracking=dataclasses.replace(tiny_project.tracking, experiment="switches"),  # apart from -stages
    )
    assert config.storage_path == store.as_uri()
    job = SupervisedJob(config, "source_only", "source", "source", "warmup")
    summary = train_supervised(job, tmp_path / "model.pt")
    assert summary["steps"] == 4 and math.isfinite(summary["loss"]) and summary["memory.peak_rss_mb"] > 0

    written = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(value.dtype in (torch.float32, torch.int64) for value in written.values())
    assert not any(key.startswith("target_stem.") for key in written)
    build_model(tiny_project).load_state_dict(written)  # the fp32 model without a target stem
    checkpoints = sorted(path for path in store.glob("*/checkpoint_*") if path.is_dir())
    assert len(checkpoints) == 2, f"expected the step-2 and step-4 checkpoints under {store}: {checkpoints}"
    assert not (tiny_project.project_root / "file:").exists()  # not taken for a relative path
    session_runtime = ray.get_runtime_context().gcs_address  # the test head runs beside it
    classes = {actor.class_name for actor in list_actors(address=session_runtime, limit=10_000)}
    assert "TrainController" in classes and "PreemptionWatcher" not in classes, classes

    segmentor = build_model(config)
    report = load_segmentor_state(segmentor, tmp_path / "model.pt")
    assert report.target_stem_from_source
    for name in ("conv1", "bn1", "layer1"):
        source = getattr(segmentor.backbone, name).state_dict()
        target = getattr(segmentor.target_stem, name).state_dict()
        trained = {key: written[f"backbone.{name}.{key}"] for key in source}
        assert all(torch.equal(source[key], target[key]) for key in source)
        assert all(torch.equal(source[key], trained[key]) for key in source)
    segmentor.eval()
    images = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        on_target, on_source = segmentor(images, domain="target"), segmentor(images, domain="source")
    assert torch.equal(on_target.logits, on_source.logits)

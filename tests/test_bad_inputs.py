"""Bad inputs are refused clearly (issue 7): every case runs a real stage entry point on a throw-away
project and asserts

- a non-zero exit code (run_stage exits 1 on an input error),
- one `error: stage <name>: …` message on stderr that names the culprit (file, key or value) and what
  was expected, and no traceback,
- nothing half-written: no new file except those a case allows (complete ones), no temporary or
  staging name anywhere, and every file that existed before the run unchanged.

The cases run the stage's entry point module in this process (`runpy` as `__main__`, `sys.argv` set to
`--params <project>/params.yaml`, cwd = the throw-away project, whose relative paths resolve inside it;
`SystemExit` caught, stderr captured), since a stage process costs 1–10 s of imports on a busy 2-core
machine; those raised inside Ray tasks use the session's Ray runtime (`needs_ray`), so Ray starts once
per session. Three run the stage as its own process, as a user or DVC does (`python -m stages.<name>`),
so the real exit status and stderr stay proven end to end: a params value (`tau_negative`), a dataset
folder (`missing_source_folder`), and `gpu_requested_without_gpu_subprocess`, which joins the session's
Ray head (the `ray job submit` path: the question is what the cluster has). Those three are marked slow
(stage processes), so `make test-fast` runs the in-process cases only.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from dvc_project import set_params
from layouts import save_palette_label, write_cityscapes, write_gta5
from PIL import Image

# The in-process cases' stage bodies, imported at collection: Ray and MLflow bind logging handlers to
# the sys.stderr of import time, which must not be a test's capsys stream (closed after that test).
import stages.adapt
import stages.evaluate
import stages.preprocess
import stages.pseudo_label
import stages.warmup  # noqa: F401
from pipeline.config import load_config
from pipeline.data.images import encode_image, encode_label
from pipeline.data.shards import Manifest, shard_name, write_shard
from pipeline.models import create_segmentor
from pipeline.models.configured import build_model

ROOT = Path(__file__).resolve().parents[1]
# runpy warns that the stage module was imported (by this module) before it runs it as __main__: intended.
pytestmark = pytest.mark.filterwarnings("ignore:'stages.:RuntimeWarning")
ROWS = "base | fc | fc_bc | dyn_nocal | dass"

# A tiny project on real-layout fixtures (no synthetic benchmark), relative paths on purpose.
BASE_PARAMS: dict[str, object] = {
    "data.synthetic.enabled": False,
    "data.source.name": "gta5",
    "data.source.root": "gta5",
    "data.target.root": "cityscapes",
    "preprocess.source_size": {"height": 12, "width": 20},
    "preprocess.target_size": {"height": 8, "width": 16},
    "preprocess.rows_per_shard": 2,
    "preprocess.rows_per_row_group": 1,
    "train.crop": {"height": 8, "width": 16},
    "model.width": 0.125,
    "distributed.cpus_per_worker": 1,
}
GTA5_SIZE = (24, 40)  # height, width of the fixture images
TEMPORARY_MARKERS = (".tmp", ".staging", ".retired")
# torch's advice for a refused pickle, which a message about an untrusted file must not pass on.
REFUSED_ADVICE = "`weights_only` set to `False`"


# ----------------------------------------------------------------------------------------- helpers


def write_params(project: Path, overrides: dict[str, object]) -> Path:
    """<project>/params.yaml: the workspace's params.yaml with dotted-key overrides (keys must exist)."""
    path = project / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    set_params(path, BASE_PARAMS | overrides)
    return path


def write_datasets(project: Path) -> None:
    write_gta5(project / "gta5", count=3, size=GTA5_SIZE)
    write_cityscapes(project / "cityscapes", {"train": 2, "val": 2}, {"train": ["aa"], "val": ["cc"]})


def snapshot(project: Path) -> dict[Path, tuple[int, int] | None]:
    """Every path under the project → (size, mtime) for files, None for folders."""
    return {
        path.relative_to(project): (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
        for path in project.rglob("*")
    }


def half_written(before: dict, after: dict, allowed_new: tuple[str, ...]) -> list[str]:
    """What a failed run left that it should not have."""
    problems = []
    for path in sorted(set(after) - set(before)):
        if any(marker in part for part in path.parts for marker in TEMPORARY_MARKERS):
            problems.append(f"temporary name left: {path}")
        elif after[path] is not None and str(path) not in allowed_new:
            problems.append(f"new file left by a failed run: {path}")
    for path, stat in before.items():
        if path not in after:
            problems.append(f"input or previous output removed: {path}")
        elif stat is not None and after[path] != stat:
            problems.append(f"input or previous output modified: {path}")
    return problems


@dataclass(frozen=True)
class Outcome:
    returncode: int | str | None
    stderr: str


def run_subprocess(
    stage: str, params: Path, args: tuple[str, ...], env: dict[str, str] | None = None
) -> Outcome:
    env = (env or dict(os.environ)) | {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--params", str(params), *args],
        cwd=params.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Outcome(result.returncode, result.stderr)


def run_in_process(stage: str, params: Path, args: tuple[str, ...], capsys, monkeypatch) -> Outcome:
    """The entry point module run as __main__ in this process (for Ray tasks on the session runtime)."""
    monkeypatch.setattr(sys, "argv", [f"stages.{stage}", "--params", str(params), *args])
    monkeypatch.chdir(params.parent)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigterm = signal.getsignal(signal.SIGTERM)  # run_stage sets its own: this process is pytest's
    crash = ""
    try:
        runpy.run_module(f"stages.{stage}", run_name="__main__")
        code: int | str | None = 0
    except SystemExit as exit_:
        code = exit_.code
    except Exception:  # an uncaught error: what the subprocess would show as a traceback
        code, crash = 1, traceback.format_exc()
    finally:
        # run_stage's logging.basicConfig may add a handler on the captured stderr, closed after the test.
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
        signal.signal(signal.SIGTERM, sigterm)
    return Outcome(code, capsys.readouterr().err + crash)


def error_block(stderr: str, stage: str) -> str:
    """The `error: stage <name>: …` line and its indented continuation lines ('' when absent)."""
    lines = stderr.replace("\r", "\n").splitlines()
    prefix = f"error: stage {stage}: "
    for index, line in enumerate(lines):
        if line.startswith(prefix):
            block = [line]
            block += [following for following in lines[index + 1 :] if following.startswith("  ")]
            return "\n".join(block)
    return ""


# --------------------------------------------------------------------------- fixture manipulations


def truncate(relative: str, keep: int = 70) -> Callable[[Path], None]:
    def prepare(project: Path) -> None:
        path = project / relative
        path.write_bytes(path.read_bytes()[:keep])

    return prepare


def overwrite(relative: str, data: bytes) -> Callable[[Path], None]:
    def prepare(project: Path) -> None:
        (project / relative).write_bytes(data)

    return prepare


def smaller_label(project: Path) -> None:
    ids = np.full((GTA5_SIZE[0] - 4, GTA5_SIZE[1]), 7, dtype=np.uint8)  # 4 rows short, all road
    save_palette_label(project / "gta5" / "labels" / "00002.png", ids)


def unknown_label_id(project: Path) -> None:
    path = project / "gta5" / "labels" / "00002.png"
    ids = np.asarray(Image.open(path)).copy()
    ids[3, 5] = 200
    save_palette_label(path, ids)


def every_source_image_garbage(project: Path) -> None:
    for path in (project / "gta5" / "images").glob("*.png"):
        path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def previous_shards(project: Path) -> None:
    """Outputs of an earlier good run: a failed run must leave them exactly as they were."""
    for split in ("source", "target_train", "target_val"):
        folder = project / "data" / "shards" / split
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text('{"previous": true}\n')
        (folder / shard_name(0)).write_bytes(b"previous shard bytes")


def remove_val_images(project: Path) -> None:
    for path in (project / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"):
        path.unlink()


def remove(relative: str) -> Callable[[Path], None]:
    def prepare(project: Path) -> None:
        shutil.rmtree(project / relative)

    return prepare


def save_warmup(project: Path, payload: object) -> Path:
    path = project / "models" / "warmup.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def other_architecture_checkpoint(project: Path) -> list[str]:
    """models/warmup.pt from a ResNet-50 segmentor while params say ResNet-18."""
    config = load_config(project / "params.yaml")
    expected = build_model(config).state_dict()
    other = create_segmentor(depth=50, width=config.model.width).state_dict()
    path = save_warmup(project, other)
    unexpected = sorted(k for k in set(other) - set(expected) if not k.endswith("num_batches_tracked"))
    reshaped = [key for key in expected if key in other and other[key].shape != expected[key].shape]
    first = reshaped[0]
    return [
        str(path),
        "unexpected",
        unexpected[0],
        f"{first}: file {list(other[first].shape)} vs model {list(expected[first].shape)}",
    ]


class ExecutesCode:
    """A pickle that would create a folder when unpickled: weights_only must refuse it, not run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def function_call_checkpoint(project: Path) -> list[str]:
    path = save_warmup(project, {"model": ExecutesCode(project / "code_was_executed")})
    return [str(path), "torch.load(weights_only=True)", "posix.mkdir"]


def class_instance_checkpoint(project: Path) -> list[str]:
    path = save_warmup(project, {"model": argparse.Namespace(lr=0.1)})
    return [str(path), "torch.load(weights_only=True)", "GLOBAL argparse.Namespace"]


def list_checkpoint(project: Path) -> list[str]:
    path = save_warmup(project, [torch.zeros(2), torch.ones(3)])
    return [str(path), "is not a state dict of tensors", "found a list"]


def truncated_target_shard(project: Path) -> list[str]:
    """A correct models/warmup.pt and target-train shards whose second shard lost its tail."""
    config = load_config(project / "params.yaml")
    save_warmup(project, build_model(config).state_dict())
    folder = project / "data" / "shards" / "target_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    height, width = config.preprocess.target_size.as_tuple()
    entries = []
    for index in range(2):
        rows = [
            {
                "id": f"aa_000000_{2 * index + i:06d}",
                "image": encode_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "png"),
                "label": encode_label(rng.integers(0, 19, (height, width), dtype=np.uint8)),
                "height": height,
                "width": width,
                "domain": "target",
                "split": "train",
            }
            for i in range(2)
        ]
        entries.append(write_shard(rows, folder / shard_name(index), rows_per_row_group=1))
    Manifest("target_train", "cityscapes", "target", 4, entries, {}, [height, width]).write(folder)
    shard = folder / shard_name(1)
    shard.write_bytes(shard.read_bytes()[:-100])
    return [str(shard), "sha256", "does not match the manifest", "rerun `dvc repro preprocess`"]


# ------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    expect: tuple[str, ...]  # fragments of the error message; "{project}" is the project folder
    overrides: dict[str, object] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    # Builds or breaks the fixtures; may return more expected fragments computed from what it wrote.
    prepare: tuple[Callable[[Path], list[str] | None], ...] = ()
    datasets: bool = True
    in_process: bool = True  # run the entry point module in this process, else in its own (module doc)
    needs_ray: bool = False  # the error is raised inside Ray tasks: use the session's Ray runtime
    joins_head: bool = (
        False  # a subprocess case that joins the session's Ray head (as under `ray job submit`)
    )
    forbid: tuple[str, ...] = ()  # fragments the message must not hold
    allowed_new: tuple[str, ...] = ()  # complete files a failed run may leave


def param_case(id_: str, key: str, value: object, expect: str, stage: str = "preprocess",
               in_process: bool = True) -> Case:  # fmt: skip
    """A params value the loader must refuse before any work (every stage validates the whole file):
    through the stage that reads the key, else through preprocess."""
    args = ("--row", "dass", "--seed", "0") if stage == "adapt" else ()
    return Case(id_, stage, (f"params.yaml: {key} = {value!r}", expect), {key: value}, args=args,
                datasets=False, in_process=in_process)  # fmt: skip


CASES = [
    # ---- params out of range (refused by load_config before any work)
    param_case("tau_zero", "adapt.tau", 0.0, "is out of range (allowed: > 0)", stage="adapt"),
    param_case("tau_negative", "adapt.tau", -0.5, "is out of range (allowed: > 0)", in_process=False),
    param_case("ema_momentum_one", "adapt.ema_momentum", 1.0, "(allowed: ≥ 0 and < 1)"),
    param_case("ema_momentum_negative", "adapt.ema_momentum", -0.01, "(allowed: ≥ 0 and < 1)"),
    param_case("threshold_above_one", "adapt.threshold", 1.5, "(allowed: ≥ -1 and ≤ 1)"),
    param_case("threshold_below_minus_one", "adapt.threshold", -1.2, "(allowed: ≥ -1 and ≤ 1)"),
    param_case("portion_zero", "cbst.portion", 0.0, "(allowed: > 0 and ≤ 1)", stage="pseudo_label"),
    param_case("portion_above_one", "cbst.portion", 1.5, "(allowed: > 0 and ≤ 1)"),
    param_case("zero_workers", "distributed.num_workers", 0, "is out of range (allowed: ≥ 1)"),
    Case(
        "unknown_ablation_row_in_params",
        "evaluate",
        (f"params.yaml: ablation.rows[1] = 'nope' is not allowed (one of: {ROWS})",),
        {"ablation.rows": ["base", "nope"]},
        datasets=False,
    ),
    Case(
        "unknown_ablation_row_on_command_line",
        "adapt",
        ("'nope'", "base, fc, fc_bc, dyn_nocal, dass"),
        args=("--row", "nope", "--seed", "0"),
        datasets=False,
    ),
    Case(
        "crop_larger_than_image",
        "preprocess",
        (
            "params.yaml: train.crop = 512×1024 is larger than preprocess.source_size 12×20",
            "(allowed: crop ≤ image × scale)",
        ),
        {"train.crop": {"height": 512, "width": 1024}},
        datasets=False,
    ),
    # ---- dataset folders (refused while listing, before any Ray task)
    Case(
        "missing_source_folder",
        "preprocess",
        (
            "gta5 root {project}/nowhere: missing folder images/",
            "expected layout: images/*.png and labels/*.png",
        ),
        {"data.source.root": "nowhere"},
        in_process=False,
    ),
    Case(
        "missing_target_folder",
        "preprocess",
        (
            "cityscapes root {project}/cityscapes: missing folder leftImg8bit/train/",
            "leftImg8bit/train/<city>/*_leftImg8bit.png",
        ),
        prepare=(remove("cityscapes"),),
    ),
    Case(
        "empty_split",
        "preprocess",
        (
            "split target_val: no cityscapes samples under {project}/cityscapes",
            "expected leftImg8bit/val/<city>/*_leftImg8bit.png",
        ),
        prepare=(remove_val_images,),
    ),
    # ---- corrupt samples (raised inside preprocess's Ray tasks; earlier shards must survive)
    Case(
        "corrupt_png_truncated_image",
        "preprocess",
        ("{project}/gta5/images/00003.png: cannot decode image",),
        prepare=(previous_shards, truncate("gta5/images/00003.png")),
        needs_ray=True,
    ),
    Case(
        "corrupt_png_garbage_label",
        "preprocess",
        ("{project}/gta5/labels/00002.png: cannot decode image",),
        prepare=(previous_shards, overwrite("gta5/labels/00002.png", b"this is not a PNG")),
        needs_ray=True,
    ),
    Case(
        "image_label_size_mismatch",
        "preprocess",
        (
            "{project}/gta5/images/00002.png: image size 40×24 differs from its label "
            "{project}/gta5/labels/00002.png size 40×20",
        ),
        prepare=(previous_shards, smaller_label),
        needs_ray=True,
    ),
    Case(
        "label_id_outside_table",
        "preprocess",
        (
            "{project}/gta5/labels/00002.png: label ids [200] are not in the gta5 id table (0–33)",
            "preprocess.unknown_label_ids: ignore",
        ),
        prepare=(previous_shards, unknown_label_id),
        needs_ray=True,
    ),
    Case(
        "every_sample_skipped_leaves_empty_split",
        "preprocess",
        ("split source: every sample under {project}/gta5 was skipped as corrupt",),
        {"preprocess.on_corrupt": "skip"},
        prepare=(previous_shards, every_source_image_garbage),
        needs_ray=True,
    ),
    # ---- shards and checkpoints (pseudo_label reads models/warmup.pt, then the target-train shards)
    Case(
        "truncated_parquet_shard",
        "pseudo_label",
        (),
        prepare=(truncated_target_shard,),
        datasets=False,
    ),
    Case(
        "checkpoint_of_another_architecture",
        "pseudo_label",
        ("do not match the Segmentor",),
        prepare=(other_architecture_checkpoint,),
        datasets=False,
    ),
    Case(
        "checkpoint_pickle_calls_a_function",
        "pseudo_label",
        (),
        prepare=(function_call_checkpoint,),
        datasets=False,
        forbid=(REFUSED_ADVICE,),
    ),
    Case(
        "checkpoint_pickles_a_class_instance",
        "pseudo_label",
        (),
        prepare=(class_instance_checkpoint,),
        datasets=False,
        forbid=(REFUSED_ADVICE,),
    ),
    Case(
        "checkpoint_is_a_list",
        "pseudo_label",
        (),
        prepare=(list_checkpoint,),
        datasets=False,
    ),
    Case(
        "pretrained_file_missing",
        "pseudo_label",
        ("weights file {project}/weights/resnet18.pth does not exist",),
        {"model.pretrained": "weights/resnet18.pth"},
        datasets=False,
    ),
    # ---- hardware asked for that the cluster does not have
    Case(
        "gpu_requested_without_gpu",
        "warmup",
        ("distributed.use_gpu is true", "0 GPU(s)", "set distributed.use_gpu: false"),
        {"distributed.use_gpu": True},
        datasets=False,
        needs_ray=True,
    ),
    Case(
        "more_workers_than_the_local_runtime_has_cpus",
        "warmup",
        (
            "distributed.num_workers (4) × distributed.cpus_per_worker (1) = 4 CPUs",
            "the Ray cluster has 2",
            "lower distributed.num_workers",
        ),
        {"distributed.num_workers": 4},
        datasets=False,
        needs_ray=True,
    ),
    Case(
        "gpu_requested_without_gpu_subprocess",
        "warmup",
        ("distributed.use_gpu is true", "0 GPU(s)", "set distributed.use_gpu: false"),
        {"distributed.use_gpu": True},
        datasets=False,
        in_process=False,
        joins_head=True,
    ),
]


def case_marks(case: Case) -> tuple:
    """A case run as a process of its own is `slow`, as a stage process is (docs/tests.md)."""
    return () if case.in_process else (pytest.mark.slow,)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=case_marks(c)) for c in CASES])
def test_bad_input_is_refused_clearly(case: Case, tmp_path, request, capsys, monkeypatch) -> None:
    project = tmp_path.resolve() / "project"
    project.mkdir()
    params = write_params(project, case.overrides)
    if case.datasets:
        write_datasets(project)
    expect = list(case.expect)
    for prepare in case.prepare:
        expect += prepare(project) or []
    before = snapshot(project)

    if case.needs_ray:
        request.getfixturevalue("ray_runtime")
    if case.in_process:
        ray_before = ray.is_initialized()
        outcome = run_in_process(case.stage, params, case.args, capsys, monkeypatch)
        # A case that reaches Ray must say so: else the stage would start a runtime of its own in pytest's
        # process, which the session's runtime would then silently be.
        assert ray_before or not ray.is_initialized(), "the case started Ray: mark it needs_ray"
    else:
        head = request.getfixturevalue("ray_head") if case.joins_head else None
        outcome = run_subprocess(case.stage, params, case.args, head.driver_env if head else None)

    assert outcome.returncode not in (0, None), f"the stage accepted the bad input:\n{outcome.stderr}"
    block = error_block(outcome.stderr, case.stage)
    assert block, f"no `error: stage {case.stage}: …` line on stderr:\n{outcome.stderr[-4000:]}"
    assert "Traceback" not in outcome.stderr, f"a traceback instead of a clean error:\n{outcome.stderr}"
    for fragment in expect:
        fragment = fragment.replace("{project}", str(project))
        assert fragment in block, f"{fragment!r} not in the error message:\n{block}"
    for fragment in case.forbid:
        assert fragment not in block, f"{fragment!r} in the error message:\n{block}"
    assert outcome.returncode == 1, outcome.stderr
    assert not half_written(before, snapshot(project), case.allowed_new)
    assert not (project / "code_was_executed").exists(), "unpickling a checkpoint ran code"

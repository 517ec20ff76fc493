"""The benchmark's Ray tasks (for stages/synthesize.py): which images each renders, and rendering them.

Rendering is split into tasks of `data.synthetic.samples_per_task` images, written into the dataset's
folder of the staging tree the stage swaps in at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.synthetic.samples import render_scene
from pipeline.synthetic.writers import write_cityscapes_sample, write_gta5_sample, write_synthia_sample


@dataclass(frozen=True)
class RenderJob:
    """Which images one Ray task renders and where it writes them."""

    domain: str  # gta5 | synthia | cityscapes
    split: str  # train | val
    indices: tuple[int, ...]
    cities: tuple[str, ...]  # one per index (cityscapes only)
    height: int
    width: int
    seed: int
    root: str  # the dataset's folder inside the staging tree


def render_jobs(config: Config, staging: Path) -> list[RenderJob]:
    synthetic = config.data.synthetic
    per_task = synthetic.samples_per_task
    jobs: list[RenderJob] = []

    def add(
        domain: str, split: str, count: int, height: int, width: int, cities: list[str], offset: int
    ) -> None:
        for start in range(0, count, per_task):
            indices = tuple(range(offset + start, offset + min(start + per_task, count)))
            names = tuple(cities[i % len(cities)] for i in indices) if cities else ("",) * len(indices)
            jobs.append(
                RenderJob(domain, split, indices, names, height, width, synthetic.seed, str(staging / domain))
            )

    add("gta5", "train", synthetic.gta5.count, synthetic.gta5.height, synthetic.gta5.width, [], 0)
    add("synthia", "train", synthetic.synthia.count, synthetic.synthia.height, synthetic.synthia.width, [], 0)
    target = synthetic.cityscapes
    add("cityscapes", "train", target.train_count, target.height, target.width, target.train_cities, 0)
    # Val images continue the index sequence so no val scene repeats a train scene.
    add(
        "cityscapes",
        "val",
        target.val_count,
        target.height,
        target.width,
        target.val_cities,
        target.train_count,
    )
    return jobs


def render_job(job: RenderJob) -> int:
    """One Ray task: render and write the job's images in their dataset's layout."""
    root = Path(job.root)
    for index, city in zip(job.indices, job.cities, strict=True):
        sample = render_scene(job.domain, index, job.seed, job.height, job.width, city=city)
        if job.domain == "gta5":
            write_gta5_sample(root, index, sample)
        elif job.domain == "synthia":
            write_synthia_sample(root, index, sample)
        else:
            write_cityscapes_sample(root, job.split, city, index, sample)
    return len(job.indices)

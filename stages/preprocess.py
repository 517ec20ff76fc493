"""DVC stage `preprocess`: the datasets in their real layouts → data/shards/{source,target_train,target_val}.

Every shard is a Ray task of the library (pipeline/data/preprocess.py). All three splits are built in
staging folders and swapped in together at the end, so an interrupted run leaves the previous ones.
"""

from __future__ import annotations

import contextlib
import logging

from pipeline.atomic import staged_directory
from pipeline.cli import run_stage
from pipeline.config import Config
from pipeline.data.preprocess import (
    encode_options,
    list_split,
    plan_shards,
    process_shard,
    split_manifest,
    split_specs,
)
from pipeline.data.shards import Manifest
from pipeline.distributed.tasks import run_tasks

log = logging.getLogger("stages.preprocess")


def preprocess(config: Config) -> dict[str, Manifest]:
    """Write `data/shards/{source,target_train,target_val}/` with manifests; returns the manifests."""
    specs = split_specs(config)
    refs = {spec.name: list_split(spec) for spec in specs}
    options = encode_options(config)
    manifests: dict[str, Manifest] = {}
    with contextlib.ExitStack() as stack:
        staging = {
            spec.name: stack.enter_context(staged_directory(config.shards_root / spec.name)) for spec in specs
        }
        tasks = [
            task
            for spec in specs
            for task in plan_shards(spec, refs[spec.name], staging[spec.name],
                                    config.preprocess.rows_per_shard, options)
        ]  # fmt: skip
        results = run_tasks(
            process_shard, tasks, "preprocess", unit="img", weights=[len(t.refs) for t in tasks]
        )
        for spec in specs:
            split_results = [r for t, r in zip(tasks, results, strict=True) if t.spec.name == spec.name]
            manifests[spec.name] = split_manifest(spec, split_results)
            manifests[spec.name].write(staging[spec.name])
    for name, manifest in manifests.items():
        log.info(
            "%s: %d rows in %d shards, %d skipped",
            name,
            manifest.rows,
            len(manifest.shards),
            manifest.skipped,
        )
    return manifests


if __name__ == "__main__":
    run_stage("preprocess", preprocess)

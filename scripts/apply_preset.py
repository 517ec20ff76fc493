"""Write a preset's dotted-key values into params.yaml, keeping its comments, then validate it.

Usage: python scripts/apply_preset.py presets/paper-gta5.yaml [--params params.yaml]
(`dvc exp run -S key=value` does the same for one run without editing params.yaml.)
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from pipeline.config import ConfigError, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    values = yaml.safe_load(args.preset.read_text())
    round_trip = YAML()
    round_trip.preserve_quotes = True
    params = round_trip.load(args.params.read_text())
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = params
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"error: {args.preset}: {dotted!r} is not a key of {args.params}")
        if isinstance(value, dict):
            for key, item in value.items():
                node[leaf][key] = item
        else:
            node[leaf] = value
    buffer = io.StringIO()
    round_trip.dump(params, buffer)
    candidate = args.params.with_name(f".{args.params.name}.preset")
    candidate.write_text(buffer.getvalue())
    try:
        load_config(candidate)
    except ConfigError as error:
        candidate.unlink()
        raise SystemExit(f"error: the preset gives an invalid config: {error}") from None
    candidate.replace(args.params)
    print(f"applied {len(values)} values from {args.preset} to {args.params}")


if __name__ == "__main__":
    main()

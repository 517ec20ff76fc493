"""Peak memory of this process, read the same way by stage drivers, training workers and benchmarks."""

from __future__ import annotations

import resource
import sys

# ru_maxrss is in KiB on Linux and in bytes on macOS (getrusage(2) of each).
MAXRSS_UNIT_BYTES = 1 if sys.platform == "darwin" else 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (a stage's driver, Ray tasks and Ray Train
    workers are separate processes and each reports its own)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT_BYTES / 2**20

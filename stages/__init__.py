"""The DVC stages' entry points, one module each: `python -m stages.<name> --params params.yaml`."""

import os

# Before any stage module imports Ray, which reads this once, when `ray._raylet` is imported: the stage's
# driver then gets no Abseil failure-signal handler. That handler answers a SIGTERM by arming an abort 3 s
# later, which killed stages half-way through their cleanup on a loaded machine (exit -6, issue 14);
# `pipeline.cli.run_stage` unwinds on SIGTERM itself and reports a crash with Python's faulthandler. The
# processes of a local runtime the stage starts inherit it and end with the stage; a cluster's are not
# touched. See `pipeline.distributed.runtime._sigterm_deferred`.
os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"

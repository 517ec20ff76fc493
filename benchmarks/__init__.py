"""Speed benchmarks of issue 6, each printing side-by-side ratios (`python -m benchmarks.<name>`).

`python -m benchmarks.run_all` runs every one of them; `benchmarks.timing` holds what they share.
Nothing here is imported by the pipeline or its tests.
"""

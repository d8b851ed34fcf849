"""Benchmarks of the rs_text_search engine against what users would use instead (``make bench``).

Run ``python -m bench`` (``--quick`` for a smaller run, ``--full`` for the full-size figures).
Each figure lives in its own module; :mod:`bench.run` runs them in one process (indexing runs
go to a child process so their peak memory can be read), writes ``bench/results.json`` and
renders ``BENCHMARKS.md`` at the repository root. Nothing here is a pass/fail test: targets are
reported as pass or miss beside the measured ratios.
"""

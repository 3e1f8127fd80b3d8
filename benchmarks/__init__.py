"""Benchmark runners, their helpers and tests: checkout only, not part of the installed ``rec_transfer`` package.

Run a runner from the repository root as a module, e.g. ``python -m benchmarks.transfer --help``; reports go to
``benchmarks/results/`` (``benchmarks/results/INDEX.md`` says what each answers).
"""

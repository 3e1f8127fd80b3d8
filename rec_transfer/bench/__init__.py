"""Helpers for benchmark scripts: run a config through the CLI per seed and aggregate honestly."""

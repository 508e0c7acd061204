"""Test helpers importable from any test (`pythonpath = ["tests"]`)."""

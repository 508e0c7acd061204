"""Samplers that draw fresh noise at every step still give the same picture for the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from generation.engine import Imagine


@pytest.mark.parametrize("sampler", ["dpm++_sde", "dpm++_sde_karras"])
def test_sde_samplers_reproduce_from_the_seed(engine, request_for, sampler):
    request = request_for(f"a blue square on a white background --sampler {sampler} --steps 6")
    grid = engine.run(Imagine(request, seed=40, count=2))
    again = engine.run(Imagine(request, seed=40, count=2))
    alone = engine.run(Imagine(request, seed=41, count=1))  # the grid's second picture, made on its own
    for first, second in zip(grid.images, again.images, strict=True):
        assert np.array_equal(np.asarray(first), np.asarray(second))
    assert np.abs(np.asarray(alone.images[0], dtype=float) - np.asarray(grid.images[1], dtype=float)).max() <= 1
    other = engine.run(Imagine(request, seed=99, count=1))
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(alone.images[0]))

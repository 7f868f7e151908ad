"""The shared bench helpers: a failed flop count is said, never a silent NaN."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from stratdiff.benchtools import xla_gflop


def test_flop_count_of_a_jitted_call_and_a_visible_warning_when_there_is_none(capsys):
    matmul = jax.jit(lambda a, b: a @ b)
    x = jnp.ones((64, 64))
    gflop = xla_gflop(matmul, x, x)
    assert math.isclose(gflop, 2 * 64**3 / 1e9, rel_tol=0.1)
    assert capsys.readouterr().err == ""

    def not_jitted(a):  # has no .lower: no cost analysis
        return a

    assert math.isnan(xla_gflop(not_jitted, x))
    err = capsys.readouterr().err
    assert "no flop count for not_jitted" in err and "AttributeError" in err

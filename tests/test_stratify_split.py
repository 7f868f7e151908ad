"""Eq. 10 scores, the sorted split and the exchange cap, against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from stratdiff.stratify.split import (
    cap_exchange,
    exchange_stats,
    score_fixed_sigma,
    score_gaussian_fit,
    split_by_score,
)


def test_fixed_sigma_is_scaled_squared_distance():
    a = jnp.array([[0.0, 0.0], [1.0, -1.0]])
    g = jnp.array([[0.3, 0.4], [1.0, -1.0]])
    np.testing.assert_allclose(score_fixed_sigma(a, g, 0.5), [0.25 / 0.5, 0.0], rtol=1e-6)


def test_gaussian_fit_kl_matches_closed_form():
    guided = jnp.array([[[0.0, 1.0], [2.0, 3.0]]])  # mean (1, 2), std (1, 1)
    a = jnp.array([[1.0, 4.0]])
    sigma0 = 0.1
    # per dim: log(1/0.1) + (0.01 + diff^2)/2 - 0.5 ; diffs 0 and 2
    expected = 2 * np.log(10.0) + (0.01 + 0.0) / 2 + (0.01 + 4.0) / 2 - 1.0
    np.testing.assert_allclose(score_gaussian_fit(a, guided, sigma0), [expected], rtol=1e-5)
    # a wider guided policy makes the same distance less surprising
    wide = jnp.array([[[-1.0, 0.0], [3.0, 4.0]]])  # mean (1, 2), std (2, 2)
    # per dim: log(2/0.1) + (0.01 + diff^2)/(2*4) - 0.5 ; diffs 0 and 2
    expected_wide = 2 * np.log(20.0) + (0.01 + 0.0) / 8 + (0.01 + 4.0) / 8 - 1.0
    np.testing.assert_allclose(score_gaussian_fit(a, wide, sigma0), [expected_wide], rtol=1e-5)
    assert expected_wide - 2 * np.log(2.0) < expected  # less surprising, beyond the wider policy's log-std cost


def test_split_takes_lowest_rho_share_offline_like():
    scores = jnp.array([5.0, 0.1, 3.0, 0.2, 9.0, 0.0, 4.0, 1.0])
    online_like = np.asarray(split_by_score(scores, 0.5))
    assert online_like.tolist() == [True, False, True, False, True, False, True, False]
    # rho = 0.25 of 8: the two lowest scores (positions 5 and 1) are offline-like, nothing else
    assert np.asarray(split_by_score(scores, 0.25)).tolist() == [True, False, True, True, True, False, True, True]
    # rho = 0.25 of 10 is 2.5 samples: rounded up to 3 (positions 5, 1, 3), as the batch's offline part
    ten = jnp.concatenate([scores, jnp.array([7.0, 8.0])])
    assert np.flatnonzero(~np.asarray(split_by_score(ten, 0.25))).tolist() == [1, 3, 5]
    assert int(split_by_score(scores, 1.0).sum()) == 0


@pytest.mark.parametrize("cap", [0, 1, 2, None])
def test_exchange_cap_limits_each_direction(cap):
    # 4 offline (first) + 4 online samples; the online ones score lowest -> full exchange of 4
    scores = jnp.array([5.0, 6.0, 7.0, 8.0, 0.1, 0.2, 0.3, 0.4])
    from_online = jnp.array([False] * 4 + [True] * 4)
    online_like = split_by_score(scores, 0.5)
    assert int(exchange_stats(online_like, from_online)["strat/exchange"]) == 8
    capped = cap_exchange(online_like, scores, from_online, cap)
    stats = {k: int(v) for k, v in exchange_stats(capped, from_online).items()}
    limit = 4 if cap is None else cap
    assert stats["strat/exchange_off_to_on"] == limit and stats["strat/exchange_on_to_off"] == limit
    assert stats["strat/n_on"] == 4  # stratum sizes unchanged when the batch share equals rho
    if cap == 1:
        # the offline sample that crosses is the highest-scored; the online one the lowest-scored
        assert np.asarray(capped).tolist() == [False, False, False, True, False, True, True, True]

"""The behaviour-fidelity maths (`stratdiff.behaviour.fidelity`) on known policies, and the true
behaviour reconstruction of a medium-replay dataset (`stratdiff.behaviour.truth`)."""

import numpy as np
import pytest
from scipy import special

from stratdiff.behaviour.fidelity import EDGE, FactorisedPolicy, fidelity

N, D, M = 6, 3, 4000
SIGMA = 0.1


def _gaussian(loc_shift=0.0, scale=SIGMA):
    """A known Gaussian policy per state (clipping at +-1 is > 6 sigma away)."""
    loc = np.linspace(-0.3, 0.3, N * D).reshape(N, D)
    return FactorisedPolicy.single("clipped_gaussian", loc + loc_shift, np.full((N, D), scale))


def test_exact_model_scores_the_floor():
    truth = _gaussian()
    out = fidelity(truth, truth.sample(np.random.default_rng(1), M), np.random.default_rng(2))
    s = out["summary"]
    floor = SIGMA / np.sqrt(M)  # the standard error of a sample mean
    assert s["model_mean_error"]["mean"] < 3 * floor
    assert abs(s["model_mean_error"]["mean"] - s["policy_mean_error"]["mean"]) < 2 * floor
    assert abs(s["model_std_ratio"]["mean"] - 1.0) < 0.02
    assert abs(s["loglik_gap"]["mean"]) < 0.05  # nats; the log-likelihood's own sampling noise is ~0.02
    # the policy's own log-likelihood: -D (log sigma + log(2 pi) / 2 + 1 / 2)
    expected = -D * (np.log(SIGMA) + 0.5 * np.log(2 * np.pi) + 0.5)
    assert s["policy_log_likelihood"]["mean"] == pytest.approx(expected, abs=0.05)


def test_biased_model_scores_its_bias():
    truth, bias = _gaussian(), 0.05
    model = _gaussian(loc_shift=bias).sample(np.random.default_rng(1), M)
    s = fidelity(truth, model, np.random.default_rng(2))["summary"]
    assert s["model_mean_bias"]["mean"] == pytest.approx(bias, abs=0.005)
    assert s["model_mean_error"]["mean"] == pytest.approx(bias, abs=0.005)
    assert s["model_std_error"]["mean"] < 0.01
    # E_p[log p] - E_q[log p] for q = p shifted by b: D b^2 / (2 sigma^2) = 0.375 nats
    assert s["loglik_gap"]["mean"] == pytest.approx(D * bias**2 / (2 * SIGMA**2), abs=0.05)


def test_too_wide_model_scores_its_spread():
    truth, k = _gaussian(), 1.5
    model = _gaussian(scale=k * SIGMA).sample(np.random.default_rng(1), M)
    s = fidelity(truth, model, np.random.default_rng(2))["summary"]
    assert s["model_std_ratio"]["mean"] == pytest.approx(k, abs=0.03)
    assert s["model_std_error"]["mean"] == pytest.approx((k - 1) * SIGMA, abs=0.004)
    assert s["model_mean_error"]["mean"] < 0.01
    # E_p[log p] - E_q[log p] for q with k times the spread: D (k^2 - 1) / 2 = 1.875 nats
    assert s["loglik_gap"]["mean"] == pytest.approx(D * (k**2 - 1) / 2, abs=0.1)


def test_tanh_gaussian_density_moments_and_edge():
    loc, scale = np.array([[0.8, -2.0]]), np.array([[0.5, 0.3]])
    p = FactorisedPolicy.single("tanh_gaussian", loc, scale)
    # density = derivative of the CDF P(a <= a0) = Phi((atanh(a0) - loc) / scale), dimension by dimension
    a0, h = np.array([0.3, -0.95]), 1e-5
    cdf = lambda a: special.ndtr((np.arctanh(a) - loc[0]) / scale[0])  # noqa: E731
    density = np.prod((cdf(a0 + h) - cdf(a0 - h)) / (2 * h))
    assert p.log_prob(a0[None, None])[0, 0] == pytest.approx(np.log(density), rel=1e-6)
    # exact moments against a large sample
    mean, std = p.moments()
    a = p.sample(np.random.default_rng(0), 400_000)[0]
    np.testing.assert_allclose(a.mean(0), mean[0], atol=2e-3)
    np.testing.assert_allclose(a.std(0), std[0], atol=2e-3)
    # |a| = 1 is scored as |a| = 1 - EDGE: finite, and the same for both
    lp = p.log_prob(np.array([[[1.0, -1.0], [1 - EDGE, -1 + EDGE]]]))[0]
    assert np.all(np.isfinite(lp)) and lp[0] == pytest.approx(lp[1])


def test_clipped_gaussian_atoms_and_moments():
    loc, scale = np.array([[0.9, -0.2]]), np.array([[0.2, 0.5]])
    p = FactorisedPolicy.single("clipped_gaussian", loc, scale)
    a = p.sample(np.random.default_rng(0), 400_000)[0]
    mean, std = p.moments()
    np.testing.assert_allclose(a.mean(0), mean[0], atol=2e-3)
    np.testing.assert_allclose(a.std(0), std[0], atol=2e-3)
    # the atom at +1 holds P(x >= 1) = Phi((loc - 1) / scale); log_prob scores it with that mass
    share = (a[:, 0] >= 1.0).mean()
    assert share == pytest.approx(special.ndtr((0.9 - 1.0) / 0.2), abs=3e-3)
    lp_edge = p.log_prob(np.array([[[1.0, 0.0]]]))[0, 0] - p.log_prob(np.array([[[0.0, 0.0]]]))[0, 0]
    lp_zero_dim0 = -0.5 * (0.9 / 0.2) ** 2 - np.log(0.2) - 0.5 * np.log(2 * np.pi)
    assert lp_edge == pytest.approx(np.log(share) - lp_zero_dim0, abs=0.02)


def test_uniform_and_bad_shapes():
    p = FactorisedPolicy.single("uniform", np.zeros((2, 4)), np.ones((2, 4)))
    mean, std = p.moments()
    assert np.all(mean == 0) and np.allclose(std, 1 / np.sqrt(3))
    assert np.allclose(p.log_prob(np.zeros((2, 5, 4))), -4 * np.log(2))
    with pytest.raises(ValueError, match="samples must be"):
        fidelity(p, np.zeros((3, 5, 4)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown policy family"):
        FactorisedPolicy.single("beta", np.zeros((1, 1)), np.ones((1, 1)))


def test_medium_replay_truth_reproduces_logged_actions():
    """At a snapshot step the reconstructed policy is the one SAC acted with: its Gaussian and SAC's
    action key (fold_in(fold_in(PRNGKey(seed), 1), step)) give back the logged action. It needs
    the SAC run's actor snapshots (`stratdiff sac train --env Hopper-v5`, not shipped); without
    them the truth is refused with one line, which is checked instead."""
    import jax

    from stratdiff.behaviour.truth import eligible_rows, sac_checkpoints_root, true_behaviour
    from stratdiff.data.builders import make_dataset

    if not (sac_checkpoints_root() / "hopper-s0" / "snapshots").is_dir():
        ds = make_dataset("hopper-medium-replay-v5", size=2_000)
        with pytest.raises(FileNotFoundError, match="no SAC run with a snapshot"):
            true_behaviour(ds, np.array([5, 1_000]))
        pytest.skip("the Hopper SAC run's snapshots are not here (stratdiff sac train --env Hopper-v5)")

    ds = make_dataset("hopper-medium-replay-v5", size=30_010)
    rows = np.array([5, 10_000, 20_000, 30_000])
    truth, notes = true_behaviour(ds, rows)
    assert notes["sac_run"] == "hopper-s0" and notes["uniform_rows"] == 1
    assert list(truth.family) == [2, 0, 0, 0]  # uniform before SAC's 10k random steps, then tanh-Gaussian
    act_key = jax.random.fold_in(jax.random.PRNGKey(0), 1)
    for i, t in enumerate(rows[1:], start=1):
        z = np.asarray(jax.random.normal(jax.random.fold_in(act_key, int(t)), (1, 3)))[0]
        np.testing.assert_allclose(np.tanh(truth.loc[i] + truth.scale[i] * z), ds.actions[t], atol=1e-4)
    assert np.isfinite(truth.log_prob(ds.actions[rows][:, None])).all()
    ok = eligible_rows(ds, max_gap=50)
    assert ok[:3].tolist() == [0, 1, 2] and 51 not in ok and 9_950 in ok and 25_000 not in ok and 30_009 in ok


@pytest.mark.parametrize("name", ["halfcheetah-medium-v5", "antmaze-umaze-diverse-v0"])
def test_logged_actions_score_like_the_policys_own(name, tmp_path):
    """The reconstructed policy gives the dataset's own actions the log-likelihood its own samples get
    (a wrong policy, waypoint or goal would score them far lower)."""
    from stratdiff.behaviour.truth import true_behaviour
    from stratdiff.data import load_dataset
    from stratdiff.data.builders import build

    out, _, _ = build(name, size=2000, out=tmp_path / name)
    ds = load_dataset(str(out))
    rows = np.arange(0, ds.size, 5)
    truth, notes = true_behaviour(ds, rows, str(out))
    logged = truth.log_prob(ds.actions[rows][:, None])[:, 0]
    own = truth.log_prob(truth.sample(np.random.default_rng(0), 64)).mean(axis=1)
    assert logged.mean() == pytest.approx(own.mean(), abs=0.3)
    if "antmaze" in name:  # goals matter: other goals' actions differ from the logged goal's
        assert notes["equal_goal_mixture_mean_error"]["median"] > 0.1

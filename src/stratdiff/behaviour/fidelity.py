"""How close a behaviour model's samples are to the true behaviour policy, state by state.

Our datasets are drawn from known policies (`stratdiff.behaviour.truth` says which, row by row),
so the behaviour density beta(a|s) that StratDiff's diffusion model mu_theta(a|s) (paper Eq. 5)
tries to learn is known at every dataset state. Every policy the builders use has independent
action dimensions given the state, in [-1, 1]^d, from one of three families (`FAMILIES`):

- "tanh_gaussian": a = tanh(x), x ~ N(loc, scale^2) (the SAC policies: medium, replay snapshots);
- "clipped_gaussian": a = clip(x, -1, 1), x ~ N(loc, scale^2) (AntMaze: controller + N(0, 0.2^2));
- "uniform": a ~ U[-1, 1] (SAC's random start steps in a replay buffer).

`FactorisedPolicy` holds one such distribution per state: exact moments (closed form for the
clipped and uniform families, Gauss-Hermite quadrature for tanh), sampling, and the log-density
of any action, with two conventions stated here once:

- tanh-Gaussian: log p(a) = sum_i [log N(atanh(a_i); loc_i, scale_i) - log(1 - a_i^2)] (the change
  of variables). Actions are float32 in practice and a sample with |a_i| = 1 has no finite
  density, so |a_i| is clamped to 1 - `EDGE` (1e-6, |atanh| <= 7.25) first; the policy's own
  samples pass through the same float32 rounding and clamp, so both sides are scored alike, and
  `fidelity` reports the share of clamped values on each side.
- clipped Gaussian: the law has atoms at -1 and +1. An action within `EDGE` of a bound is scored
  with the log-mass of that atom (log Phi), any other with the Gaussian log-density: a density
  with respect to Lebesgue measure plus the two atoms, the same for both sides.

`fidelity(truth, samples, rng)` compares [n, m, d] model samples with the truth: per state the
RMS (over dimensions) error of the sample mean and of the sample standard deviation against the
exact ones, and the true log-likelihood of the model's samples against that of m of the policy's
own samples. The same errors for the policy's own m samples are the sampling floor: what a
perfect model scores with m samples.
"""

from __future__ import annotations

import numpy as np
from scipy import special

FAMILIES = ("tanh_gaussian", "clipped_gaussian", "uniform")
TANH, CLIPPED, UNIFORM = range(3)
EDGE = 1e-6  # actions within EDGE of +-1 are clamped (tanh) or scored as the atom (clipped)
_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)  # weight exp(-z^2 / 2)
_GH_WEIGHTS = _GH_WEIGHTS / np.sqrt(2.0 * np.pi)


def _normal_logpdf(x, loc, scale):
    z = (x - loc) / scale
    return -0.5 * z**2 - np.log(scale) - _HALF_LOG_2PI


class FactorisedPolicy:
    """One action distribution per state, independent across action dimensions.

    family [n] (indices into `FAMILIES`), loc and scale [n, d] (the Gaussian's before tanh or
    clipping; ignored for "uniform").
    """

    def __init__(self, family, loc, scale):
        loc = np.asarray(loc, np.float64)
        scale = np.asarray(scale, np.float64)
        family = np.asarray(family, np.int64).reshape(-1)
        if loc.ndim != 2 or loc.shape != scale.shape or family.shape != (loc.shape[0],):
            raise ValueError(f"FactorisedPolicy: family [n], loc and scale [n, d]; got shapes "
                             f"{family.shape}, {loc.shape}, {scale.shape}")
        if not np.all((family >= 0) & (family < len(FAMILIES))):
            raise ValueError(f"FactorisedPolicy: family codes must be 0..{len(FAMILIES) - 1}")
        if not np.all(scale[family != UNIFORM] > 0):
            raise ValueError("FactorisedPolicy: scale must be positive")
        self.family, self.loc, self.scale = family, loc, np.where(scale > 0, scale, 1.0)

    @classmethod
    def single(cls, family: str, loc, scale) -> FactorisedPolicy:
        """All states from one family (`family` a name in `FAMILIES`)."""
        if family not in FAMILIES:
            raise ValueError(f"unknown policy family {family!r} (known: {', '.join(FAMILIES)})")
        loc = np.asarray(loc, np.float64)
        return cls(np.full(loc.shape[0], FAMILIES.index(family)), loc, scale)

    @property
    def num_states(self) -> int:
        return int(self.loc.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.loc.shape[1])

    def subset(self, rows) -> FactorisedPolicy:
        return FactorisedPolicy(self.family[rows], self.loc[rows], self.scale[rows])

    def _is(self, code: int) -> np.ndarray:
        return (self.family == code)[:, None]

    # ------------------------------------------------------------------ moments
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact per-dimension mean and standard deviation, [n, d] each."""
        mu, s = self.loc, self.scale
        # tanh: Gauss-Hermite quadrature over z ~ N(0, 1)
        t = np.tanh(mu[..., None] + s[..., None] * _GH_NODES)
        t_mean, t_sq = t @ _GH_WEIGHTS, (t**2) @ _GH_WEIGHTS
        # clipped normal on [-1, 1], closed form (alpha, beta: the bounds in z units)
        a, b = (-1.0 - mu) / s, (1.0 - mu) / s
        pa, pb = special.ndtr(a), special.ndtr(b)
        fa, fb = np.exp(-0.5 * a**2) / np.sqrt(2 * np.pi), np.exp(-0.5 * b**2) / np.sqrt(2 * np.pi)
        inside = pb - pa
        c_mean = -pa + (1.0 - pb) + mu * inside + s * (fa - fb)
        c_sq = pa + (1.0 - pb) + mu**2 * inside + 2 * mu * s * (fa - fb) + s**2 * (inside + a * fa - b * fb)
        mean = np.where(self._is(TANH), t_mean, np.where(self._is(CLIPPED), c_mean, 0.0))
        sq = np.where(self._is(TANH), t_sq, np.where(self._is(CLIPPED), c_sq, 1.0 / 3.0))
        return mean, np.sqrt(np.maximum(sq - mean**2, 0.0))

    # ----------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """m actions per state, [n, m, d] float32 (rounded as stored actions are)."""
        n, d = self.loc.shape
        x = self.loc[:, None] + self.scale[:, None] * rng.standard_normal((n, m, d))
        u = rng.uniform(-1.0, 1.0, (n, m, d))
        fam = self.family[:, None, None]
        a = np.where(fam == TANH, np.tanh(x), np.where(fam == CLIPPED, np.clip(x, -1.0, 1.0), u))
        return a.astype(np.float32)

    # ------------------------------------------------------------------ density
    def log_prob(self, actions: np.ndarray) -> np.ndarray:
        """log p(a | s) of actions [n, m, d] (m actions for each of the n states) -> [n, m].

        Conventions at |a| = 1: the module docstring."""
        a = np.asarray(actions, np.float64)
        if a.ndim != 3 or a.shape[0] != self.num_states or a.shape[2] != self.action_dim:
            raise ValueError(f"log_prob: actions must be [n={self.num_states}, m, d={self.action_dim}], "
                             f"got shape {a.shape}")
        mu, s = self.loc[:, None], self.scale[:, None]
        # tanh-Gaussian with the change of variables, |a| clamped to 1 - EDGE
        c = np.clip(a, -1.0 + EDGE, 1.0 - EDGE)
        lp_tanh = _normal_logpdf(np.arctanh(c), mu, s) - np.log1p(-c**2)
        # clipped Gaussian: atoms at the bounds, density inside
        lp_clip = np.where(a >= 1.0 - EDGE, special.log_ndtr((mu - 1.0) / s),
                           np.where(a <= -1.0 + EDGE, special.log_ndtr((-1.0 - mu) / s),
                                    _normal_logpdf(a, mu, s)))
        lp_unif = np.where(np.abs(a) <= 1.0, -np.log(2.0), -np.inf)
        fam = self.family[:, None, None]
        lp = np.where(fam == TANH, lp_tanh, np.where(fam == CLIPPED, lp_clip, lp_unif))
        return lp.sum(axis=-1)


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(x**2, axis=-1))


def _per_state(truth: FactorisedPolicy, samples: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    return {"mean_error": _rms(samples.mean(axis=1) - mean),
            "std_error": _rms(samples.std(axis=1) - std),
            "mean_bias": (samples.mean(axis=1) - mean).mean(axis=-1),
            "std_ratio": (samples.std(axis=1) / np.maximum(std, 1e-12)).mean(axis=-1),
            "log_likelihood": truth.log_prob(samples).mean(axis=1),
            "at_edge": (np.abs(samples) >= 1.0 - EDGE).mean(axis=(1, 2))}


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(x)), "median": float(np.median(x)),
            "q10": float(np.quantile(x, 0.1)), "q90": float(np.quantile(x, 0.9))}


def fidelity(truth: FactorisedPolicy, samples: np.ndarray, rng: np.random.Generator) -> dict:
    """Compare model samples [n, m, d] with the true per-state policies `truth` (n states).

    Returns {"summary": ..., "per_state": ...}. Per state (arrays [n] in "per_state"):

    - mean_error: RMS over dimensions of (sample mean - true mean);
    - std_error: RMS over dimensions of (sample std - true std);
    - mean_bias: mean over dimensions of (sample mean - true mean), signed;
    - std_ratio: mean over dimensions of sample std / true std;
    - log_likelihood: mean over the m samples of log beta(a | s);
    - at_edge: share of action values within EDGE of +-1;

    for the model ("model_*") and for m of the true policy's own samples drawn with `rng`
    ("policy_*": the floor a perfect model reaches with m samples), plus
    loglik_gap = policy_log_likelihood - model_log_likelihood (0 for a perfect model, up to
    sampling noise; > 0 when the model puts its samples where the policy puts less density).
    "summary" gives the mean, median, 10% and 90% quantiles of each over the states.
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 3 or samples.shape[0] != truth.num_states or samples.shape[2] != truth.action_dim:
        raise ValueError(f"fidelity: samples must be [n={truth.num_states}, m, d={truth.action_dim}], "
                         f"got shape {samples.shape}")
    if samples.shape[1] < 2:
        raise ValueError("fidelity: need at least 2 samples per state for a spread")
    mean, std = truth.moments()
    own = truth.sample(rng, samples.shape[1]).astype(np.float64)
    per_state = {f"model_{k}": v for k, v in _per_state(truth, samples, mean, std).items()}
    per_state.update({f"policy_{k}": v for k, v in _per_state(truth, own, mean, std).items()})
    per_state["loglik_gap"] = per_state["policy_log_likelihood"] - per_state["model_log_likelihood"]
    summary = {k: _summary(v) for k, v in per_state.items()}
    summary["states"] = int(samples.shape[0])
    summary["samples_per_state"] = int(samples.shape[1])
    summary["true_std_mean"] = float(std.mean())
    return {"summary": summary, "per_state": per_state}

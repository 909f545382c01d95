"""AlpacaEval 2 length-controlled win rate, fitted with numpy.

AlpacaEval 2 explains each judge preference of model m over baseline b on instruction x with a
logistic GLM::

    logit P(m beats b | x) = (θ_m - θ_b) + φ · tanh(Δlen / std(Δlen)) + (terms of instruction x)

where Δlen = len(m's output) - len(b's output) and the length difference is divided by its standard
deviation but not centred, so an average length advantage stays in the length term. The
length-controlled (LC) win rate is the GLM's predicted win rate with the length term set to zero,
averaged over instructions.

How this version differs from AlpacaEval's:

- One model against one baseline. AlpacaEval fits its instruction-difficulty terms once across many
  models and a per-model slope on them; here each instruction gets its own additive intercept δ_x,
  fitted together with θ and φ. With one judgement per instruction these intercepts are not
  identified on their own, so they carry an L2 penalty (``instruction_l2``, a Gaussian prior that
  shrinks them to zero); θ and φ carry a tiny one (``global_l2``) that only keeps them finite when
  the model wins or loses every comparison (the LC win rate is then about 0.999 or 0.001, not 1 or 0).
- Preferences may be soft: a tie is a target of 0.5 in the log-likelihood, as in AlpacaEval.
- The 95% interval is a seeded percentile bootstrap over instructions (each resample refits the GLM,
  standardization included), not AlpacaEval's standard error, and never narrower than the Wilson interval of
  the LC value over the instructions (so it keeps its width when every comparison ties, and at small n).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from rd_pipeline.evaluation.metrics import Estimate, wilson_interval


@dataclass(frozen=True)
class LengthGLM:
    """A fitted length GLM: intercept θ, length slope φ, one intercept δ per instruction."""

    theta: float
    phi: float
    instruction_terms: np.ndarray
    length_scale: float

    def lc_win_rate(self) -> float:
        """Predicted win rate with the length term zeroed, averaged over instructions."""
        return float(np.mean(_sigmoid(self.theta + self.instruction_terms)))

    def raw_fit_win_rate(self, scaled_length_diff: np.ndarray, instruction_index: np.ndarray) -> float:
        """Predicted win rate with the length term kept, averaged over observations."""
        eta = self.theta + self.phi * scaled_length_diff + self.instruction_terms[instruction_index]
        return float(np.mean(_sigmoid(eta)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _log1pexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def scale_length_difference(length_diff: np.ndarray) -> tuple[np.ndarray, float]:
    """``tanh(Δlen / std(Δlen))`` and the std used; all zeros when every difference is equal to the others."""
    std = float(np.std(length_diff, ddof=1)) if length_diff.size > 1 else 0.0
    if not std > 0:
        return np.zeros_like(length_diff, dtype=float), 0.0
    return np.tanh(length_diff / std), std


def fit_length_glm(
    preferences: np.ndarray,
    length_diff: np.ndarray,
    instruction_index: np.ndarray,
    n_instructions: int,
    instruction_l2: float = 1.0,
    global_l2: float = 1e-3,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> LengthGLM:
    """Fit θ, φ and the instruction intercepts by penalized maximum likelihood (damped Newton).

    Every observation touches one instruction intercept, so the Hessian is an arrow matrix: the
    Newton step is solved through a 2×2 Schur complement in O(observations) per iteration.
    """
    y = preferences.astype(float)
    x, scale = scale_length_difference(length_diff.astype(float))
    idx = instruction_index
    k = n_instructions
    theta, phi = 0.0, 0.0
    delta = np.zeros(k)

    def objective(t: float, f: float, d: np.ndarray) -> float:
        eta = t + f * x + d[idx]
        nll = float(np.sum(_log1pexp(eta) - y * eta))
        return nll + 0.5 * global_l2 * (t * t + f * f) + 0.5 * instruction_l2 * float(d @ d)

    current = objective(theta, phi, delta)
    for _ in range(max_iter):
        eta = theta + phi * x + delta[idx]
        p = _sigmoid(eta)
        r = p - y
        w = np.maximum(p * (1 - p), 1e-12)
        g_a = np.array([r.sum() + global_l2 * theta, (r * x).sum() + global_l2 * phi])
        g_d = np.bincount(idx, weights=r, minlength=k) + instruction_l2 * delta
        a_mat = np.array(
            [[w.sum() + global_l2, (w * x).sum()], [(w * x).sum(), (w * x * x).sum() + global_l2]]
        )
        b = np.vstack(
            [np.bincount(idx, weights=w, minlength=k), np.bincount(idx, weights=w * x, minlength=k)]
        )
        d_diag = b[0] + instruction_l2
        schur = a_mat - (b / d_diag) @ b.T
        step_a = np.linalg.solve(schur, g_a - b @ (g_d / d_diag))
        step_d = (g_d - b.T @ step_a) / d_diag
        t = 1.0
        while True:
            cand = (theta - t * step_a[0], phi - t * step_a[1], delta - t * step_d)
            value = objective(*cand)
            if value <= current or t < 1e-8:
                break
            t *= 0.5
        theta, phi, delta = cand
        improvement = current - value
        current = value
        if improvement < tol * (1.0 + abs(current)):
            break
    return LengthGLM(float(theta), float(phi), delta, scale)


def _validate(
    preferences: Sequence[float | None],
    model_lengths: Sequence[int | float],
    baseline_lengths: Sequence[int | float],
    instruction_ids: Sequence[Hashable],
) -> None:
    sizes = {len(preferences), len(model_lengths), len(baseline_lengths), len(instruction_ids)}
    if len(sizes) != 1:
        raise ValueError(
            "length_controlled_win_rate: preferences, model_lengths, baseline_lengths and instruction_ids "
            f"must have equal lengths, got {len(preferences)}, {len(model_lengths)}, "
            f"{len(baseline_lengths)}, {len(instruction_ids)}"
        )
    for name, seq in (("model_lengths", model_lengths), ("baseline_lengths", baseline_lengths)):
        for i, v in enumerate(seq):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"length_controlled_win_rate: {name}[{i}] = {v!r} is not a length >= 0")
    for i, p in enumerate(preferences):
        if p is None or (isinstance(p, numbers.Real) and math.isnan(p)):
            continue
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(
                f"length_controlled_win_rate: preferences[{i}] = {p!r} is not None or a number in [0, 1]"
            )


def length_controlled_win_rate(
    preferences: Sequence[float | None],
    model_lengths: Sequence[int | float],
    baseline_lengths: Sequence[int | float],
    instruction_ids: Sequence[Hashable],
    n_bootstrap: int = 200,
    seed: int = 0,
    instruction_l2: float = 1.0,
) -> Estimate:
    """AlpacaEval 2 length-controlled win rate of a model against a baseline, with a bootstrap 95% interval.

    ``preferences`` are 1.0 (model wins), 0.5 (tie), 0.0 (baseline wins) or None (unparsable:
    dropped and counted in ``n_excluded``). Lengths are output lengths in any consistent unit
    (AlpacaEval uses characters). Several rows may share an instruction id (for example both judge
    orders); they then share one instruction intercept and are resampled together. The interval is the
    bootstrap's, widened where needed to the Wilson interval of the LC value over the instructions (see
    :func:`~rd_pipeline.evaluation.metrics.win_rate`): resamples of identical preferences (every comparison a
    tie, or a handful of wins) all give the same value, and that must not read as certainty. With fewer than
    two instructions or ``n_bootstrap`` 0 the Wilson interval is used alone.
    """
    _validate(preferences, model_lengths, baseline_lengths, instruction_ids)
    keep = [i for i, p in enumerate(preferences) if not (p is None or math.isnan(p))]
    excluded = len(preferences) - len(keep)
    if not keep:
        return Estimate(math.nan, math.nan, math.nan, 0, excluded)
    y = np.array([float(preferences[i]) for i in keep])
    diff = np.array([float(model_lengths[i]) - float(baseline_lengths[i]) for i in keep])
    codes: dict[Hashable, int] = {}
    idx = np.array([codes.setdefault(instruction_ids[i], len(codes)) for i in keep], dtype=np.intp)
    k = len(codes)
    value = fit_length_glm(y, diff, idx, k, instruction_l2=instruction_l2).lc_win_rate()
    floor_low, floor_high = wilson_interval(value * k, k)
    if k < 2 or n_bootstrap <= 0:
        return Estimate(value, floor_low, floor_high, len(keep), excluded)

    order = np.argsort(idx, kind="stable")
    counts = np.bincount(idx, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        picks = rng.integers(0, k, size=k)
        rows = np.concatenate([order[starts[c] : starts[c] + counts[c]] for c in picks])
        new_idx = np.repeat(np.arange(k), counts[picks])
        boot[b] = fit_length_glm(y[rows], diff[rows], new_idx, k, instruction_l2=instruction_l2).lc_win_rate()
    low, high = np.percentile(boot, [2.5, 97.5])
    return Estimate(value, min(float(low), floor_low), max(float(high), floor_high), len(keep), excluded)

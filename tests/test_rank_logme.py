"""LogME: the evidence formula against a direct computation, its maximum, and its ranking on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from featx.rank.logme import fit_alpha_beta, log_evidence, logme


def _direct_log_evidence(X, y, alpha, beta) -> float:
    """log N(y; 0, I/beta + X Xᵀ/alpha): the marginal likelihood with the weights integrated out."""
    n = len(y)
    C = np.eye(n) / beta + X @ X.T / alpha
    sign, logdet = np.linalg.slogdet(C)
    assert sign > 0
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(C, y)))


@pytest.mark.parametrize("n,d", [(12, 5), (6, 9)])  # more samples than features, and fewer
def test_the_evidence_equals_the_marginal_likelihood_computed_directly(n, d):
    rng = np.random.default_rng(n * d)
    X = rng.normal(size=(n, d))
    y = (rng.random(n) > 0.5).astype(float)
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    sigma = np.zeros(d)
    sigma[: len(s)] = s**2
    for alpha, beta in ((1.0, 1.0), (0.3, 4.0), (7.0, 0.2)):
        got = log_evidence(U.T @ y, float(y @ y), sigma, n, alpha, beta)
        assert got == pytest.approx(_direct_log_evidence(X, y, alpha, beta), rel=1e-9, abs=1e-9)


def test_the_fixed_point_maximises_the_evidence():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6))
    y = X @ rng.normal(size=6) + 0.5 * rng.normal(size=40)  # a linear target: finite alpha and beta
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    sigma, z = s**2, U.T @ y
    alpha, beta = fit_alpha_beta(z, float(y @ y), sigma, 40)
    assert 0.01 < alpha < 100 and 0.5 < beta < 20  # near the truth: weights ~ N(0, 1), noise sd 0.5
    best = log_evidence(z, float(y @ y), sigma, 40, alpha, beta)
    for a, b in ((alpha * 1.3, beta), (alpha / 1.3, beta), (alpha, beta * 1.3), (alpha, beta / 1.3)):
        assert log_evidence(z, float(y @ y), sigma, 40, a, b) < best


def test_features_that_carry_the_labels_rank_above_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=300)
    onehot = np.eye(4)[y]
    informative = np.hstack([onehot + 0.3 * rng.normal(size=(300, 4)), rng.normal(size=(300, 12))])
    weaker = np.hstack([onehot + 1.5 * rng.normal(size=(300, 4)), rng.normal(size=(300, 12))])
    noise = rng.normal(size=(300, 16))
    scores = [logme(F, y) for F in (informative, weaker, noise)]
    assert scores[0] > scores[1] > scores[2]
    with pytest.raises(ValueError, match="two classes"):
        logme(noise, np.zeros(300))

"""Distributions against closed forms computed in NumPy."""

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    SquashedDiagGaussianDistribution,
    make_proba_distribution,
)


def np_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_categorical_closed_forms():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    actions = np.array([0, 3, 1, 2, 3])
    dist = CategoricalDistribution(4).proba_distribution(mx.array(logits))
    log_p = np_log_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(np.array(dist.log_prob(mx.array(actions))), log_p[np.arange(5), actions], rtol=1e-5)
    np.testing.assert_allclose(np.array(dist.entropy()), -(np.exp(log_p) * log_p).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(np.array(dist.mode()), logits.argmax(-1))


def test_categorical_sampling_frequencies():
    mx.random.seed(0)
    probs = np.array([0.1, 0.6, 0.3])
    dist = CategoricalDistribution(3).proba_distribution(mx.array(np.log(np.tile(probs, (20000, 1)))))
    counts = np.bincount(np.array(dist.sample()), minlength=3) / 20000
    np.testing.assert_allclose(counts, probs, atol=0.015)


def test_diag_gaussian_closed_forms():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(6, 3)).astype(np.float32)
    log_std = np.array([-0.5, 0.0, 0.7], dtype=np.float32)
    actions = rng.normal(size=(6, 3)).astype(np.float32)
    dist = DiagGaussianDistribution(3).proba_distribution(mx.array(mean), mx.array(log_std))
    std = np.exp(log_std.astype(np.float64))
    expected = (-((actions - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    np.testing.assert_allclose(np.array(dist.log_prob(mx.array(actions))), expected, rtol=1e-5)
    expected_entropy = (0.5 * np.log(2 * math.pi * math.e * std**2)).sum()
    np.testing.assert_allclose(np.array(dist.entropy()), np.full(6, expected_entropy), rtol=1e-5)
    np.testing.assert_allclose(np.array(dist.mode()), mean)
    mx.random.seed(0)
    big = DiagGaussianDistribution(3).proba_distribution(mx.array(np.tile(mean[:1], (40000, 1))), mx.array(log_std))
    samples = np.array(big.sample())
    np.testing.assert_allclose(samples.mean(0), mean[0], atol=0.03)
    np.testing.assert_allclose(samples.std(0), std, rtol=0.03)


def test_multicategorical_is_sum_of_independent_categoricals():
    rng = np.random.default_rng(2)
    nvec = [3, 2, 4]
    logits = rng.normal(size=(4, sum(nvec))).astype(np.float32)
    actions = np.array([[0, 1, 3], [2, 0, 0], [1, 1, 1], [2, 1, 2]])
    dist = MultiCategoricalDistribution(nvec).proba_distribution(mx.array(logits))
    parts = np.split(logits.astype(np.float64), np.cumsum(nvec)[:-1], axis=1)
    expected_lp = sum(np_log_softmax(p)[np.arange(4), actions[:, i]] for i, p in enumerate(parts))
    expected_ent = sum(-(np.exp(np_log_softmax(p)) * np_log_softmax(p)).sum(-1) for p in parts)
    np.testing.assert_allclose(np.array(dist.log_prob(mx.array(actions))), expected_lp, rtol=1e-5)
    np.testing.assert_allclose(np.array(dist.entropy()), expected_ent, rtol=1e-5)
    assert np.array(dist.sample()).shape == (4, 3)
    np.testing.assert_array_equal(np.array(dist.mode()), np.stack([p.argmax(-1) for p in parts], 1))


def test_bernoulli_closed_forms_including_extreme_logits():
    logits = np.array([[-3.0, 0.0, 2.0], [50.0, -50.0, 0.5]], dtype=np.float32)
    actions = np.array([[1, 0, 1], [1, 0, 0]], dtype=np.float32)
    dist = BernoulliDistribution(3).proba_distribution(mx.array(logits))
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    with np.errstate(divide="ignore"):
        expected = np.where(actions == 1, np.log(p), np.log1p(-p)).sum(-1)
    expected_entropy = -(
        np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0) + np.where(p < 1, (1 - p) * np.log1p(-np.minimum(p, 1 - 1e-16)), 0)
    ).sum(-1)
    np.testing.assert_allclose(np.array(dist.log_prob(mx.array(actions))), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(dist.entropy()), expected_entropy, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.array(dist.mode()), (logits > 0).astype(np.float32))


@pytest.mark.parametrize("action", [0.0, 0.5, -0.9, 0.999, -0.99999, 1.0, -1.0])
def test_squashed_gaussian_log_prob_matches_change_of_variables(action):
    mean, log_std = np.array([[0.3]], np.float32), np.array([0.2], np.float32)
    dist = SquashedDiagGaussianDistribution(1).proba_distribution(mx.array(mean), mx.array(log_std))
    log_prob = float(np.array(dist.log_prob(mx.array([[action]], dtype=mx.float32)))[0])
    assert np.isfinite(log_prob)
    # Reference in float64 with the same clipping of the action: log N(u) - log(1 - tanh(u)^2)
    a = np.clip(np.float64(np.float32(action)), -1 + 1e-6, 1 - 1e-6)
    a = float(np.float32(a))
    u = np.arctanh(a)
    std = math.exp(0.2)
    reference = -((u - 0.3) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi) - math.log(1 - np.tanh(u) ** 2)
    assert log_prob == pytest.approx(reference, rel=2e-3, abs=2e-3)


def test_make_proba_distribution_rejects_unsupported():
    from gymnasium import spaces

    with pytest.raises(NotImplementedError, match="not supported"):
        make_proba_distribution(spaces.Tuple([spaces.Discrete(2)]))
    with pytest.raises(NotImplementedError, match="gSDE"):
        make_proba_distribution(spaces.Box(-1, 1, (2,)), use_sde=True)

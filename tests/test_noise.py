"""Action noises: statistics, the OU recursion, per-env copies."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise, VectorizedActionNoise


def test_normal_noise_statistics():
    np.random.seed(0)
    noise = NormalActionNoise(mean=np.array([1.0, -2.0]), sigma=np.array([0.1, 0.5]))
    samples = np.stack([noise() for _ in range(20000)])
    assert samples.dtype == np.float32 and samples.shape == (20000, 2)
    np.testing.assert_allclose(samples.mean(0), [1.0, -2.0], atol=0.02)
    np.testing.assert_allclose(samples.std(0), [0.1, 0.5], rtol=0.03)
    with pytest.raises(ValueError, match="sigma"):
        NormalActionNoise(np.zeros(1), -np.ones(1))


def test_ornstein_uhlenbeck_follows_its_recursion_and_resets():
    mean, sigma, theta, dt = np.array([0.5]), np.array([0.2]), 0.15, 1e-2
    noise = OrnsteinUhlenbeckActionNoise(mean, sigma, theta=theta, dt=dt)
    np.random.seed(1)
    values = [noise() for _ in range(3)]
    np.random.seed(1)
    x = np.zeros(1)
    for value in values:
        x = x + theta * (mean - x) * dt + sigma * np.sqrt(dt) * np.random.normal(size=1)
        np.testing.assert_allclose(value, x, rtol=1e-6)
    noise.reset()
    np.testing.assert_array_equal(noise.noise_prev, np.zeros(1))
    with_initial = OrnsteinUhlenbeckActionNoise(mean, sigma, initial_noise=np.array([3.0]))
    with_initial()
    with_initial.reset()
    np.testing.assert_array_equal(with_initial.noise_prev, [3.0])


def test_vectorized_noise_has_independent_copies_and_resets_by_index():
    base = OrnsteinUhlenbeckActionNoise(np.zeros(2), np.ones(2))
    vec = VectorizedActionNoise(base, n_envs=3)
    out = vec()
    assert out.shape == (3, 2)
    assert not np.allclose(out[0], out[1])
    vec.reset(indices=[1])
    assert np.all(vec.noises[1].noise_prev == 0)  # type: ignore[attr-defined]
    assert np.all(vec.noises[0].noise_prev != 0)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="positive integer"):
        VectorizedActionNoise(base, 0)
    with pytest.raises(TypeError, match="ActionNoise"):
        VectorizedActionNoise(object(), 2)  # type: ignore[arg-type]

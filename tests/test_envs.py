"""The small test environments: spaces, dynamics, vectorised compute_reward."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_baselines3.common.envs import (
    BitFlippingEnv,
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)


def test_identity_env_reward_and_truncation():
    env = IdentityEnv(dim=4, ep_length=3)
    obs, _ = env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(obs)
    assert reward == 1.0 and not terminated and not truncated
    _, reward, _, _, _ = env.step((env.state + 1) % 4)
    assert reward == 0.0
    _, _, terminated, truncated, _ = env.step(0)
    assert truncated and not terminated
    with pytest.raises(ValueError, match="at most one"):
        IdentityEnv(dim=2, space=IdentityEnvMultiBinary(2).action_space)


def test_identity_env_seeding_is_reproducible():
    a, b = IdentityEnvMultiDiscrete(5), IdentityEnvMultiDiscrete(5)
    obs_a, _ = a.reset(seed=3)
    obs_b, _ = b.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert a.observation_space.nvec.tolist() == [5, 5]
    assert IdentityEnvMultiBinary(6).observation_space.n == 6


def test_identity_env_box_tolerance():
    env = IdentityEnvBox(eps=0.1)
    obs, _ = env.reset(seed=0)
    assert env.step(obs + 0.05)[1] == 1.0
    assert env.step(env.state + 0.2)[1] == 0.0


def test_fake_image_env():
    env = FakeImageEnv(action_dim=3, screen_height=20, screen_width=30, n_channels=2, channel_first=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 20, 30) and obs.dtype == np.uint8
    assert env.action_space.n == 3
    for step in range(10):
        _, _, terminated, truncated, _ = env.step(0)
        assert not terminated and truncated == (step == 9)
    assert FakeImageEnv(discrete=False).action_space.shape == (5,)


def test_simple_multi_obs_env_reaches_goal():
    env = SimpleMultiObsEnv(random_start=False)
    obs, _ = env.reset(seed=0)
    assert obs["img"].shape == (64, 64, 1) and obs["vec"].shape == (5,)
    # 0 -> 1 -> 2 -> 3 (right x3), 3 -> 7 -> 11 -> 15 (down x3)
    for action in [2, 2, 2, 1, 1, 1]:
        obs, reward, terminated, _, info = env.step(action)
    assert terminated and reward == 1.0 and info["got_to_end"]
    env.reset()
    _, reward, terminated, _, _ = env.step(3)  # up from 0: wall
    assert env.state == 0 and reward == pytest.approx(-0.1) and not terminated
    # Continuous actions take the argmax
    env_c = SimpleMultiObsEnv(random_start=False, discrete_actions=False, channel_last=False)
    env_c.reset()
    env_c.step(np.array([0.0, 0.0, 1.0, 0.0]))
    assert env_c.state == 1
    assert env_c.observation_space["img"].shape == (1, 64, 64)


@pytest.mark.parametrize(
    "kwargs", [{}, {"continuous": True}, {"discrete_obs_space": True}, {"image_obs_space": True}]
)
def test_bit_flipping_env_dynamics_and_vectorised_reward(kwargs):
    n_bits = 5
    env = BitFlippingEnv(n_bits=n_bits, **kwargs)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    # Flip every zero bit: the goal (all ones) is reached at the last flip
    zero_bits = np.flatnonzero(env.state == 0)
    if len(zero_bits) == 0:
        pytest.skip("initial state already at the goal")
    for i, bit in enumerate(zero_bits):
        if kwargs.get("continuous"):
            action = -np.ones(n_bits, np.float32)
            action[bit] = 1.0
        else:
            action = bit
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        last = i == len(zero_bits) - 1
        assert reward == (0.0 if last else -1.0) and terminated == last and info["is_success"] == last

    # Vectorised reward over a batch of goals in the observation format
    goals = [
        env.convert_if_needed(np.array(bits, dtype=np.int8)) for bits in ([1] * 5, [0] * 5, [1, 1, 0, 1, 1])
    ]
    achieved = np.array(goals)
    desired = np.array([env.convert_if_needed(np.ones(n_bits, np.int8))] * 3)
    rewards = env.compute_reward(achieved, desired, None)
    np.testing.assert_array_equal(rewards, [0.0, -1.0, -1.0])
    assert rewards.dtype == np.float32


def test_bit_flipping_discrete_encoding():
    env = BitFlippingEnv(n_bits=4, discrete_obs_space=True)
    assert env.convert_if_needed(np.array([1, 0, 1, 0])) == 5  # bit i is worth 2**i
    np.testing.assert_array_equal(
        env.convert_to_bit_vector(np.array([5, 8]), 2), [[1, 0, 1, 0], [0, 0, 0, 1]]
    )


def test_bit_flipping_truncation_and_render():
    env = BitFlippingEnv(n_bits=3, max_steps=2, render_mode="rgb_array")
    env.reset(seed=0)
    env.state[:] = 0
    _, _, terminated, truncated, _ = env.step(0)
    assert not terminated and not truncated
    _, _, terminated, truncated, _ = env.step(0)
    assert not terminated and truncated
    np.testing.assert_array_equal(env.render(), env.state)

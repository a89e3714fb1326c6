"""Replay buffers: storage layout, timeouts, optimize_memory_usage, n-step returns, dict spaces."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.replay_buffer import DictReplayBuffer, NStepReplayBuffer, ReplayBuffer

OBS_SPACE = spaces.Box(-10, 10, shape=(2,), dtype=np.float32)
ACT_SPACE = spaces.Box(-1, 1, shape=(1,), dtype=np.float32)


def _fill(buffer: ReplayBuffer, n_rows: int, n_envs: int = 1, done_at=(), timeout_at=()) -> None:
    """Row t, env e: obs = [t, e], next_obs = [t + 1, e], action = t / 100, reward = t + 10 e."""
    for t in range(n_rows):
        obs = np.array([[t, e] for e in range(n_envs)], dtype=np.float32)
        next_obs = obs + np.array([1, 0], dtype=np.float32)
        actions = np.full((n_envs, 1), t / 100.0, dtype=np.float32)
        rewards = np.array([t + 10 * e for e in range(n_envs)], dtype=np.float32)
        dones = np.array([t in done_at or t in timeout_at for _ in range(n_envs)])
        infos = [{"TimeLimit.truncated": t in timeout_at} for _ in range(n_envs)]
        buffer.add(obs, next_obs, actions, rewards, dones, infos)


def test_samples_are_consistent_transitions_as_mx_arrays():
    buffer = ReplayBuffer(100, OBS_SPACE, ACT_SPACE, n_envs=2)
    assert buffer.buffer_size == 50
    _fill(buffer, 10, n_envs=2)
    np.random.seed(0)
    batch = buffer.sample(64)
    assert isinstance(batch.observations, mx.array)
    obs = np.array(batch.observations)
    assert obs.shape == (64, 2) and np.array(batch.rewards).shape == (64, 1)
    t, e = obs[:, 0], obs[:, 1]
    np.testing.assert_allclose(np.array(batch.next_observations), np.stack([t + 1, e], axis=1))
    np.testing.assert_allclose(np.array(batch.actions)[:, 0], t / 100.0, atol=1e-7)
    np.testing.assert_allclose(np.array(batch.rewards)[:, 0], t + 10 * e)
    assert batch.discounts is None
    # both envs and only filled rows are sampled
    assert set(e.tolist()) == {0.0, 1.0} and t.max() <= 9


def test_timeouts_are_not_terminal_but_terminations_are():
    buffer = ReplayBuffer(20, OBS_SPACE, ACT_SPACE)
    _fill(buffer, 10, done_at=(3,), timeout_at=(6,))
    samples = buffer.sample_numpy(500)
    t = samples.observations[:, 0]
    dones = samples.dones[:, 0]
    assert np.all(dones[t == 3] == 1.0)
    assert np.all(dones[t == 6] == 0.0)  # time-limit end: bootstrapped
    assert np.all(dones[(t != 3)] == 0.0)


def test_without_timeout_handling_every_done_is_terminal():
    buffer = ReplayBuffer(20, OBS_SPACE, ACT_SPACE, handle_timeout_termination=False)
    _fill(buffer, 10, timeout_at=(6,))
    samples = buffer.sample_numpy(500)
    assert np.all(samples.dones[samples.observations[:, 0] == 6] == 1.0)


def test_wraps_around_and_keeps_the_newest_rows():
    buffer = ReplayBuffer(5, OBS_SPACE, ACT_SPACE)
    _fill(buffer, 7)
    assert buffer.full and buffer.pos == 2 and buffer.size() == 5
    t = buffer.sample_numpy(400).observations[:, 0]
    assert set(t.tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_optimize_memory_usage_reads_next_obs_from_next_row_and_skips_stale_row():
    with pytest.raises(ValueError, match="handle_timeout_termination"):
        ReplayBuffer(5, OBS_SPACE, ACT_SPACE, optimize_memory_usage=True)
    buffer = ReplayBuffer(
        5, OBS_SPACE, ACT_SPACE, optimize_memory_usage=True, handle_timeout_termination=False
    )
    assert buffer.next_observations is None
    _fill(buffer, 7)
    samples = buffer.sample_numpy(400)
    t = samples.observations[:, 0]
    # row pos=2 holds obs 7 (the next obs of step 6) whose own transition does not exist yet
    assert set(t.tolist()) == {3.0, 4.0, 5.0, 6.0}
    np.testing.assert_allclose(samples.next_observations[:, 0], t + 1)


def test_discrete_observations_with_several_envs():
    buffer = ReplayBuffer(10, spaces.Discrete(5), spaces.Discrete(3), n_envs=3)
    buffer.add(
        np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([2, 1, 0]), np.ones(3), np.zeros(3), [{}] * 3
    )
    samples = buffer.sample_numpy(50)
    assert samples.observations.shape == (50, 1) and samples.actions.shape == (50, 1)
    np.testing.assert_array_equal(samples.next_observations, samples.observations + 1)
    np.testing.assert_array_equal(samples.actions, 2 - samples.observations)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="buffer_size"):
        ReplayBuffer(0, OBS_SPACE, ACT_SPACE)
    buffer = ReplayBuffer(10, OBS_SPACE, ACT_SPACE, n_envs=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="infos for 2 envs"):
        buffer.add(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 1)), np.zeros(2), np.zeros(2), [{}])


def _nstep_reference(rewards, dones, timeouts, start, n, gamma, newest):
    """Plain-loop n-step return for one env."""
    ret, k = 0.0, 0
    while True:
        ret += gamma**k * rewards[start + k]
        last = start + k
        if dones[last] or timeouts[last] or last == newest or k == n - 1:
            break
        k += 1
    return ret, last, float(dones[last] and not timeouts[last]), gamma ** (k + 1)


def test_nstep_returns_match_a_loop_reference():
    gamma, n = 0.9, 3
    buffer = NStepReplayBuffer(30, OBS_SPACE, ACT_SPACE, n_steps=n, gamma=gamma)
    done_at, timeout_at = (4,), (9,)
    _fill(buffer, 12, done_at=done_at, timeout_at=timeout_at)
    rewards = np.arange(12, dtype=np.float64)
    dones = np.array([t in done_at or t in timeout_at for t in range(12)])
    timeouts = np.array([t in timeout_at for t in range(12)])
    samples = buffer.sample_numpy(300)
    for i in range(300):
        t = int(samples.observations[i, 0])
        ret, last, done, discount = _nstep_reference(rewards, dones, timeouts, t, n, gamma, newest=11)
        assert samples.rewards[i, 0] == pytest.approx(ret, rel=1e-6)
        assert samples.next_observations[i, 0] == last + 1
        assert samples.dones[i, 0] == done
        assert samples.discounts[i, 0] == pytest.approx(discount, rel=1e-6)
    # each of the special cases was drawn
    starts = set(samples.observations[:, 0].astype(int).tolist())
    assert {3, 4, 8, 9, 10, 11} <= starts


def test_nstep_with_one_step_equals_plain_buffer_with_gamma_discount():
    buffer = NStepReplayBuffer(30, OBS_SPACE, ACT_SPACE, n_steps=1, gamma=0.5)
    _fill(buffer, 6, done_at=(2,))
    samples = buffer.sample_numpy(100)
    t = samples.observations[:, 0]
    np.testing.assert_allclose(samples.rewards[:, 0], t)
    np.testing.assert_allclose(samples.discounts, 0.5)
    np.testing.assert_allclose(samples.dones[:, 0], (t == 2).astype(np.float32))


def test_dict_replay_buffer():
    obs_space = spaces.Dict({"pos": OBS_SPACE, "idx": spaces.Discrete(4)})
    buffer = DictReplayBuffer(10, obs_space, ACT_SPACE, n_envs=2)
    for t in range(3):
        obs = {"pos": np.full((2, 2), t, dtype=np.float32), "idx": np.array([t, t])}
        next_obs = {"pos": np.full((2, 2), t + 1, dtype=np.float32), "idx": np.array([t + 1, t + 1])}
        buffer.add(obs, next_obs, np.zeros((2, 1)), np.full(2, t), np.array([t == 2] * 2), [{}, {}])
    batch = buffer.sample(32)
    assert isinstance(batch.observations["pos"], mx.array)
    pos = np.array(batch.observations["pos"])[:, 0]
    np.testing.assert_array_equal(np.array(batch.observations["idx"])[:, 0], pos)
    np.testing.assert_array_equal(np.array(batch.next_observations["pos"])[:, 0], pos + 1)
    np.testing.assert_array_equal(np.array(batch.dones)[:, 0], (pos == 2).astype(np.float32))


def test_state_round_trip_and_mismatch_errors():
    buffer = ReplayBuffer(8, OBS_SPACE, ACT_SPACE)
    _fill(buffer, 5, done_at=(2,))
    arrays, meta = buffer.get_state()
    assert arrays["observations"].shape[0] == 6  # only the rows in use (+1) are saved
    restored = ReplayBuffer(8, OBS_SPACE, ACT_SPACE)
    restored.set_state({k: v.copy() for k, v in arrays.items()}, meta)
    assert restored.pos == 5 and not restored.full
    np.testing.assert_array_equal(restored.observations, buffer.observations)
    np.testing.assert_array_equal(restored.dones, buffer.dones)
    with pytest.raises(ValueError, match="buffer_size"):
        ReplayBuffer(16, OBS_SPACE, ACT_SPACE).set_state(arrays, meta)
    with pytest.raises(ValueError, match="missing"):
        ReplayBuffer(8, OBS_SPACE, ACT_SPACE).set_state({"actions": arrays["actions"]}, meta)
    bad = dict(arrays, rewards=arrays["rewards"][:2])
    with pytest.raises(ValueError, match="'rewards' has shape"):
        ReplayBuffer(8, OBS_SPACE, ACT_SPACE).set_state(bad, meta)

"""The shared off-policy loop: stored transitions, timeouts, action scaling, callbacks, train cadence,
replay-buffer files, n-step and Dict observations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.callbacks import BaseCallback
from mlx_baselines3.common.env_util import make_vec_env
from mlx_baselines3.common.envs import SimpleMultiObsEnv
from mlx_baselines3.common.noise import NormalActionNoise, VectorizedActionNoise
from mlx_baselines3.common.replay_buffer import DictReplayBuffer, NStepReplayBuffer
from mlx_baselines3.dqn import DQN
from mlx_baselines3.sac import SAC
from mlx_baselines3.td3 import TD3

SMALL = dict(net_arch=[8])


class CounterEnv(gym.Env):
    """obs = [t, episode]; odd episodes terminate after 3 steps, even ones run into the time limit.

    Records the actions it receives.
    """

    observation_space = spaces.Box(-100, 100, shape=(2,), dtype=np.float32)
    action_space = spaces.Box(-2.0, 4.0, shape=(1,), dtype=np.float32)

    def __init__(self) -> None:
        self.t = 0
        self.episode = -1
        self.received: list[float] = []

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.episode], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.episode += 1
        return self._obs(), {}

    def step(self, action):
        self.received.append(float(np.asarray(action).reshape(-1)[0]))
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t == 3
        return self._obs(), float(self.t), terminated, False, {}


def _counter_env() -> gym.Env:
    return gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=5)


def _random_sac(env, **kwargs) -> SAC:
    """A SAC that only acts randomly (learning never starts), to inspect the collect loop."""
    return SAC(
        "MlpPolicy", env, policy_kwargs=SMALL, buffer_size=1000, learning_starts=10_000, seed=0, **kwargs
    )


def test_stored_transitions_use_terminal_observations_and_keep_timeouts_apart():
    model = _random_sac(_counter_env())
    model.learn(40)
    buffer = model.replay_buffer
    n = buffer.size()
    obs, next_obs = buffer.observations[:n, 0], buffer.next_observations[:n, 0]
    # next_obs is the observation reached, also at episode ends (not the next episode's reset)
    np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0] + 1)
    np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1])
    episode, t_next = obs[:, 1], next_obs[:, 0]
    terminal = (episode % 2 == 1) & (t_next == 3)
    truncated = (episode % 2 == 0) & (t_next == 5)
    np.testing.assert_array_equal(buffer.dones[:n, 0], (terminal | truncated).astype(np.float32))
    np.testing.assert_array_equal(buffer.timeouts[:n, 0], truncated.astype(np.float32))
    samples = buffer.sample_numpy(400)
    sampled_terminal = (samples.observations[:, 1] % 2 == 1) & (samples.next_observations[:, 0] == 3)
    np.testing.assert_array_equal(samples.dones[:, 0], sampled_terminal.astype(np.float32))
    assert truncated.any() and terminal.any()
    assert model._episode_num == int(terminal.sum() + truncated.sum())


def test_box_actions_are_stored_scaled_to_unit_interval_and_sent_unscaled():
    env = _counter_env()
    model = _random_sac(env)
    model.learn(30)
    sent = np.array(env.unwrapped.received)
    stored = model.replay_buffer.actions[:30, 0, 0]
    assert np.all(np.abs(stored) <= 1.0) and stored.min() < -0.5 and stored.max() > 0.5
    np.testing.assert_allclose(sent, -2.0 + 0.5 * (stored + 1.0) * 6.0, rtol=1e-5, atol=1e-5)


def test_callback_sees_sb3_locals_and_can_stop_training():
    seen: list[set] = []

    class Spy(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(set(self.locals))
            return self.n_calls < 7

    model = _random_sac(_counter_env())
    model.learn(100, callback=Spy())
    assert len(seen) == 7 and model.num_timesteps == 7
    assert {
        "new_obs",
        "rewards",
        "dones",
        "infos",
        "actions",
        "buffer_actions",
        "num_collected_steps",
    } <= seen[0]


def test_gradient_steps_minus_one_trains_as_many_steps_as_env_steps_collected():
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = SAC(
        "MlpPolicy",
        env,
        policy_kwargs=SMALL,
        batch_size=8,
        learning_starts=0,
        train_freq=3,
        gradient_steps=-1,
        seed=0,
    )
    model.learn(12)  # two collections of 3 steps x 2 envs
    assert model.num_timesteps == 12 and model._n_updates == 12


def test_train_freq_in_episodes_and_its_constraints():
    model = SAC(
        "MlpPolicy",
        _counter_env(),
        policy_kwargs=SMALL,
        batch_size=4,
        learning_starts=0,
        train_freq=(1, "episode"),
        gradient_steps=2,
        seed=0,
    )
    model.learn(16)
    # episodes of 5, 3, 5, 3 steps: a train call after each finished episode
    assert model._n_updates == 2 * model._episode_num
    env = make_vec_env("Pendulum-v1", n_envs=2)
    with pytest.raises(ValueError, match="one env"):
        SAC("MlpPolicy", env, policy_kwargs=SMALL, train_freq=(1, "episode")).learn(4)
    with pytest.raises(ValueError, match="integer"):
        SAC("MlpPolicy", "Pendulum-v1", train_freq=(1.5, "step"))


def test_no_policy_call_before_learning_starts():
    model = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=SMALL, learning_starts=20, batch_size=4, seed=0)

    def fail(*args, **kwargs):
        raise AssertionError("the policy must not act before learning_starts")

    model.predict = fail  # type: ignore[method-assign]
    model.learn(20)
    assert model._n_updates == 0  # num_timesteps must exceed learning_starts before training


def test_action_noise_is_vectorized_for_several_envs_and_used():
    env = make_vec_env("Pendulum-v1", n_envs=3, seed=0)
    noise = NormalActionNoise(np.zeros(1), np.ones(1))
    model = TD3(
        "MlpPolicy", env, policy_kwargs=SMALL, learning_starts=0, batch_size=4, action_noise=noise, seed=0
    )
    model.learn(6)
    assert isinstance(model.action_noise, VectorizedActionNoise) and model.action_noise.n_envs == 3
    # deterministic actor + unit noise: the three envs received different actions
    assert len(np.unique(model.replay_buffer.actions[1, :, 0])) == 3


def test_save_and_load_replay_buffer(tmp_path):
    model = _random_sac(_counter_env())
    model.learn(23)
    model.save_replay_buffer(tmp_path / "buffer")
    assert (tmp_path / "buffer.pkl").exists()
    other = _random_sac(_counter_env())
    other.load_replay_buffer(tmp_path / "buffer")
    assert other.replay_buffer.pos == 23 and not other.replay_buffer.full
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(other.replay_buffer, name), getattr(model.replay_buffer, name))
    with pytest.raises(FileNotFoundError):
        other.load_replay_buffer(tmp_path / "missing")


def test_n_steps_uses_the_n_step_buffer_and_trains():
    model = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        policy_kwargs=SMALL,
        n_steps=3,
        gamma=0.9,
        batch_size=8,
        learning_starts=10,
        seed=0,
    )
    assert isinstance(model.replay_buffer, NStepReplayBuffer)
    assert model.replay_buffer.n_steps == 3 and model.replay_buffer.gamma == 0.9
    model.learn(20)
    assert model._n_updates > 0
    samples = model.replay_buffer.sample_numpy(32)
    discounts = samples.discounts[:, 0].astype(np.float64)
    assert np.all(np.min(np.abs(discounts[:, None] - np.array([0.9, 0.81, 0.729])[None]), axis=1) < 1e-6)


def test_dict_observations_with_multi_input_policy(tmp_path):
    env = SimpleMultiObsEnv(random_start=False)
    model = DQN(
        "MultiInputPolicy",
        env,
        policy_kwargs=SMALL,
        buffer_size=1000,
        learning_starts=5,
        batch_size=4,
        train_freq=2,
        seed=0,
    )
    assert isinstance(model.replay_buffer, DictReplayBuffer)
    model.learn(12)
    assert model._n_updates > 0
    model.save_replay_buffer(tmp_path / "dict_buffer.pkl")
    model.load_replay_buffer(tmp_path / "dict_buffer.pkl")
    assert model.replay_buffer.pos == 12


def test_optimize_memory_usage_needs_timeout_handling_off():
    with pytest.raises(ValueError, match="handle_timeout_termination"):
        SAC("MlpPolicy", "Pendulum-v1", optimize_memory_usage=True)
    model = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        policy_kwargs=SMALL,
        optimize_memory_usage=True,
        batch_size=4,
        buffer_size=100,
        learning_starts=5,
        replay_buffer_kwargs=dict(handle_timeout_termination=False),
        seed=0,
    )
    model.learn(10)
    assert model.replay_buffer.next_observations is None and model._n_updates > 0


@pytest.mark.parametrize("algo,env_id", [("SAC", "Pendulum-v1"), ("DQN", "CartPole-v1")])
def test_deepcopy_gives_an_independent_model(algo, env_id):
    import copy

    import mlx_baselines3

    model = getattr(mlx_baselines3, algo)("MlpPolicy", env_id, learning_starts=10, seed=0)
    model.learn(40)
    clone = copy.deepcopy(model)
    original = {k: np.array(v) for k, v in model.policy.state_dict().items()}
    clone.learn(40)
    assert all(np.array_equal(original[k], np.array(v)) for k, v in model.policy.state_dict().items())
    assert any(not np.array_equal(original[k], np.array(v)) for k, v in clone.policy.state_dict().items())


@pytest.mark.parametrize("algo,env_id", [("SAC", "Pendulum-v1"), ("TD3", "Pendulum-v1"), ("DQN", "CartPole-v1")])
def test_target_networks_stay_in_evaluation_mode(algo, env_id):
    import mlx_baselines3

    policy = getattr(mlx_baselines3, algo)("MlpPolicy", env_id).policy
    for mode in (True, False, True):
        policy.set_training_mode(mode)
        for name, module in policy.named_modules():
            in_target = any(name == t or name.startswith(t + ".") for t in policy.eval_only_submodules)
            assert module.training == (not in_target and mode), name

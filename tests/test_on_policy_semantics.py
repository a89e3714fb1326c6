"""SB3 behaviours a user relies on when driving an on-policy model: action dtypes, settings changed
after construction, replaced policies and weights, copies."""

import copy

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3 import A2C, PPO
from mlx_baselines3.common.callbacks import BaseCallback
from mlx_baselines3.common.envs import IdentityEnvBox

SMALL = dict(n_steps=16, batch_size=16, n_epochs=2)


class DtypeRecorder(gym.Wrapper):
    def step(self, action):
        self.unwrapped.seen_dtypes.add(np.asarray(action).dtype)  # type: ignore[attr-defined]
        return super().step(action)


@pytest.mark.parametrize("action_selection", ["numpy", "mlx"])
def test_discrete_actions_reach_the_env_as_signed_int64(action_selection):
    env = gym.make("MountainCar-v0")
    env.unwrapped.seen_dtypes = set()
    model = PPO("MlpPolicy", DtypeRecorder(env), **SMALL)
    model.action_selection = action_selection
    model.learn(16)
    # uint32 would wrap around in MountainCar's (action - 1) * force
    assert env.unwrapped.seen_dtypes == {np.dtype(np.int64)}


class MatrixActionEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (3,), np.float32)
    action_space = spaces.Box(-1, 1, (2, 3), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        assert action.shape == (2, 3)
        return np.zeros(3, np.float32), float(-np.abs(action).sum()), False, False, {}


@pytest.mark.parametrize("action_selection", ["numpy", "mlx"])
def test_multidimensional_box_actions(action_selection):
    model = PPO("MlpPolicy", MatrixActionEnv(), **SMALL)
    model.action_selection = action_selection
    model.learn(16)
    assert model.predict(np.zeros(3, np.float32))[0].shape == (2, 3)


def test_target_kl_and_max_grad_norm_set_after_construction_take_effect():
    model = PPO(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=16, n_epochs=10, learning_rate=0.05, seed=0
    )
    model.learn(64)
    assert model._n_updates == 10
    model.target_kl = 1e-8
    model.learn(64, reset_num_timesteps=False)
    assert model._n_updates < 20  # stopped early in the second update
    model.target_kl = None
    model.learn(64, reset_num_timesteps=False)  # back to a plain update (SB3 reads it every time)

    def change_after_one_update(max_grad_norm):
        m = A2C(
            "MlpPolicy",
            "CartPole-v1",
            n_steps=8,
            seed=0,
            learning_rate=1.0,
            use_rms_prop=False,
            policy_kwargs=dict(optimizer_class=__import__("mlx.optimizers").optimizers.SGD),
        )
        m.learn(8)
        before = {k: np.array(v) for k, v in m.policy.state_dict().items()}
        m.max_grad_norm = max_grad_norm
        m.learn(8, reset_num_timesteps=False)
        after = {k: np.array(v) for k, v in m.policy.state_dict().items()}
        return np.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))

    # SGD with lr 1: the parameter change equals the clipped gradient's norm
    assert change_after_one_update(1e-3) == pytest.approx(1e-3, rel=1e-2)


def test_replaced_policy_is_the_one_trained():
    model = PPO("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    other = PPO("MlpPolicy", "CartPole-v1", seed=1, **SMALL).policy
    old = model.policy
    old_params = {k: np.array(v) for k, v in old.state_dict().items()}
    model.policy = other
    before = {k: np.array(v) for k, v in other.state_dict().items()}
    model.learn(32)
    assert any(not np.array_equal(before[k], np.array(v)) for k, v in other.state_dict().items())
    assert all(np.array_equal(old_params[k], np.array(v)) for k, v in old.state_dict().items())


def test_rollouts_use_weights_loaded_by_a_callback():
    source = PPO("MlpPolicy", "CartPole-v1", seed=3, **SMALL)
    params = source.get_parameters()

    class LoadAtRolloutStart(BaseCallback):
        def _on_rollout_start(self):
            self.model.set_parameters(params)

        def _on_rollout_end(self):
            buffer = self.model.rollout_buffer
            obs, _ = self.model.policy.obs_to_tensor(buffer.observations.reshape(-1, 4))
            self.stored = buffer.values.reshape(-1)
            self.current = np.array(source.policy.predict_values(obs)).reshape(-1)

        def _on_step(self):
            return True

    model = PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=16, batch_size=16, n_epochs=1)
    callback = LoadAtRolloutStart()
    model.learn(16, callback=callback)
    np.testing.assert_allclose(callback.stored, callback.current, atol=1e-5)


def test_models_can_be_copied():
    model = PPO("MlpPolicy", IdentityEnvBox(ep_length=10), **SMALL)
    clone = copy.deepcopy(model)
    obs = np.zeros(1, np.float32)
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], clone.predict(obs, deterministic=True)[0]
    )
    assert copy.copy(model).policy is model.policy


def test_a2c_accepts_sb3_rmsprop_kwargs():
    import mlx.optimizers as optim

    model = A2C(
        "MlpPolicy",
        "CartPole-v1",
        policy_kwargs=dict(
            optimizer_class=optim.RMSprop, optimizer_kwargs=dict(alpha=0.99, eps=1e-5, weight_decay=0)
        ),
    )
    assert model.policy.optimizer.eps == 1e-5
    with pytest.raises(ValueError, match="weight_decay"):
        A2C(
            "MlpPolicy",
            "CartPole-v1",
            policy_kwargs=dict(optimizer_class=optim.RMSprop, optimizer_kwargs=dict(weight_decay=0.1)),
        )

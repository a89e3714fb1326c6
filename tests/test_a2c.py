"""A2C against hand computations in NumPy: the loss on a fixed batch, Monte-Carlo returns with
gae_lambda=1, and the RMSprop update (PyTorch's formula, as SB3 uses it)."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gymnasium import spaces
from mlx.utils import tree_flatten, tree_map

from mlx_baselines3 import A2C
from mlx_baselines3.a2c.a2c import a2c_loss
from mlx_baselines3.common.callbacks import BaseCallback
from mlx_baselines3.common.vec_env import DummyVecEnv

# --------------------------------------------------------------------------------------------
# A NumPy forward pass of the default MlpPolicy (tanh MLPs, separate pi / vf networks)
# --------------------------------------------------------------------------------------------


def _np_params(model) -> dict[str, np.ndarray]:
    return {name: np.array(value, dtype=np.float64) for name, value in model.policy.state_dict().items()}


def _np_mlp(params: dict[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    for index in (0, 2):
        x = np.tanh(x @ params[f"{prefix}.layers.{index}.weight"].T + params[f"{prefix}.layers.{index}.bias"])
    return x


def _np_evaluate(params, obs, actions, discrete: bool):
    """Values, log-probabilities and entropies of ``actions``, from the parameters alone."""
    latent_pi = _np_mlp(params, "mlp_extractor.policy_net", obs)
    latent_vf = _np_mlp(params, "mlp_extractor.value_net", obs)
    values = (latent_vf @ params["value_net.weight"].T + params["value_net.bias"]).reshape(-1)
    out = latent_pi @ params["action_net.weight"].T + params["action_net.bias"]
    if discrete:
        log_p = (
            out
            - np.log(np.exp(out - out.max(1, keepdims=True)).sum(1, keepdims=True))
            - out.max(1, keepdims=True)
        )
        log_prob = log_p[np.arange(len(obs)), actions.reshape(-1).astype(int)]
        entropy = -(np.exp(log_p) * log_p).sum(1)
    else:
        log_std = params["log_std"]
        std = np.exp(log_std)
        log_prob = (-0.5 * ((actions - out) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(1)
        entropy = np.full(len(obs), (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum())
    return values, log_prob, entropy


def _fixed_batch(model, n: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs_dim = model.observation_space.shape[0]
    if isinstance(model.action_space, spaces.Discrete):
        actions = rng.integers(0, model.action_space.n, size=(n, 1)).astype(np.float32)
    else:
        actions = rng.uniform(-2, 2, size=(n, 1)).astype(np.float32)
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": actions,
        "old_values": np.zeros(n, np.float32),
        "old_log_prob": np.zeros(n, np.float32),
        "advantages": rng.normal(0.5, 2.0, size=n).astype(np.float32),
        "returns": rng.normal(1.0, 3.0, size=n).astype(np.float32),
    }


@pytest.mark.parametrize("normalize_advantage", [False, True])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"], ids=["categorical", "gaussian"])
def test_a2c_loss_matches_numpy(env_id, normalize_advantage):
    model = A2C("MlpPolicy", env_id, seed=0, policy_kwargs=dict(log_std_init=-0.3))
    batch = _fixed_batch(model)
    hyper = {"ent_coef": mx.array(0.02), "vf_coef": mx.array(0.4)}
    loss, (policy_loss, value_loss, entropy_loss) = a2c_loss(
        model.policy, tree_map(mx.array, batch), hyper, normalize_advantage=normalize_advantage
    )

    discrete = env_id == "CartPole-v1"
    values, log_prob, entropy = _np_evaluate(
        _np_params(model),
        batch["observations"].astype(np.float64),
        batch["actions"].astype(np.float64),
        discrete,
    )
    advantages = batch["advantages"].astype(np.float64)
    if normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std(ddof=1) + 1e-8)
    expected_policy = -(advantages * log_prob).mean()
    expected_value = ((batch["returns"] - values) ** 2).mean()
    expected_entropy = -entropy.mean()
    np.testing.assert_allclose(float(policy_loss), expected_policy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(value_loss), expected_value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(entropy_loss), expected_entropy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        float(loss), expected_policy + 0.02 * expected_entropy + 0.4 * expected_value, rtol=1e-4, atol=1e-6
    )


# --------------------------------------------------------------------------------------------
# gae_lambda = 1: returns are discounted Monte-Carlo returns, bootstrapped at the rollout's end
# --------------------------------------------------------------------------------------------


class StaircaseEnv(gym.Env):
    """Reward ``1 + t`` at step ``t`` (whatever the action); episodes terminate after ``length`` steps."""

    observation_space = spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int) -> None:
        self.length = length
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        reward = 1.0 + self.t
        self.t += 1
        return np.array([self.t / 10], np.float32), reward, self.t >= self.length, False, {}


class RolloutRecorder(BaseCallback):
    """Keeps a copy of the rollout buffer and the bootstrap values of the last rollout."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer  # type: ignore[attr-defined]
        self.record = {
            "rewards": buffer.rewards.copy(),
            "values": buffer.values.copy(),
            "returns": buffer.returns.copy(),
            "advantages": buffer.advantages.copy(),
            "last_values": np.array(self.locals["values"]).reshape(-1).copy(),  # SB3 name at rollout end
            "dones": np.array(self.locals["dones"]).copy(),
        }


def test_gae_lambda_one_gives_monte_carlo_returns():
    gamma, n_steps, lengths = 0.9, 7, (3, 4)
    env = DummyVecEnv([partial(StaircaseEnv, length) for length in lengths])
    model = A2C("MlpPolicy", env, n_steps=n_steps, gamma=gamma, gae_lambda=1.0, seed=0)
    recorder = RolloutRecorder()
    model.learn(n_steps * len(lengths), callback=recorder)
    record = recorder.record

    for env_index, length in enumerate(lengths):
        # The rewards the env gave, step by step, and where its episodes ended (known from its length)
        step_in_episode = np.arange(n_steps) % length
        rewards = 1.0 + step_in_episode
        np.testing.assert_array_equal(record["rewards"][:, env_index], rewards)
        ends = step_in_episode == length - 1
        for t in range(n_steps):
            expected, discount = 0.0, 1.0
            for k in range(t, n_steps):
                expected += discount * rewards[k]
                discount *= gamma
                if ends[k]:
                    break
            else:  # the episode was still running when the rollout stopped: bootstrap with V(s_T)
                expected += discount * record["last_values"][env_index]
            np.testing.assert_allclose(
                record["returns"][t, env_index], expected, rtol=1e-5, err_msg=f"env {env_index}, step {t}"
            )
    np.testing.assert_allclose(
        record["advantages"], record["returns"] - record["values"], rtol=1e-5, atol=1e-5
    )


# --------------------------------------------------------------------------------------------
# RMSprop, PyTorch's formula: v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v) + eps)
# --------------------------------------------------------------------------------------------


def _clipped_numpy_gradients(model, batch, hyper, max_grad_norm):
    """Gradients of the A2C loss on the whole rollout, clipped like torch's ``clip_grad_norm_``."""
    loss_fn = partial(a2c_loss, normalize_advantage=False)
    _, grads = nn.value_and_grad(model.policy, loss_fn)(model.policy, batch, hyper)
    grads = {name: np.array(g, dtype=np.float64) for name, g in tree_flatten(grads)}
    total_norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
    coefficient = min(1.0, max_grad_norm / (total_norm + 1e-6))
    return {name: g * coefficient for name, g in grads.items()}, total_norm


def test_rmsprop_update_matches_torch_formula():
    lr, alpha, eps, max_grad_norm = 0.01, 0.99, 1e-5, 0.5
    model = A2C(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=8,
        learning_rate=lr,
        ent_coef=0.01,
        seed=0,
        max_grad_norm=max_grad_norm,
    )
    _, callback = model._setup_learn(8)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    batch = tree_map(mx.array, model.rollout_buffer.flat_data())
    hyper = {"ent_coef": mx.array(0.01, dtype=mx.float32), "vf_coef": mx.array(0.5, dtype=mx.float32)}

    params = _np_params(model)
    v = {name: np.zeros_like(value) for name, value in params.items()}
    clipped_once = False
    for step in range(2):
        grads, total_norm = _clipped_numpy_gradients(model, batch, hyper, max_grad_norm)
        clipped_once = clipped_once or total_norm > max_grad_norm
        for name, g in grads.items():
            v[name] = alpha * v[name] + (1 - alpha) * g**2
            params[name] = params[name] - lr * g / (np.sqrt(v[name]) + eps)
        model.train()  # one gradient step on the whole rollout
        actual = _np_params(model)
        for name in params:
            np.testing.assert_allclose(
                actual[name], params[name], rtol=2e-4, atol=2e-6, err_msg=f"{name} after step {step + 1}"
            )
        optimizer_v = {
            name[: -len(".v")]: np.array(value)
            for name, value in tree_flatten(model.policy.optimizer.state)
            if name.endswith(".v")
        }
        assert set(optimizer_v) == set(v)
        for name in v:
            np.testing.assert_allclose(optimizer_v[name], v[name], rtol=1e-3, atol=1e-10, err_msg=name)
    assert clipped_once  # the clipping branch was exercised
    assert int(np.array(model.policy.optimizer.state["step"])) == 2 and model._n_updates == 2

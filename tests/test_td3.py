"""TD3 and DDPG: policy delay, target smoothing, Polyak targets, compiled vs eager, save/load."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3.common.logger import configure
from mlx_baselines3.ddpg import DDPG
from mlx_baselines3.td3 import TD3
from mlx_baselines3.td3.td3 import td3_target_q

ENV_ID = "Pendulum-v1"
SMALL = dict(net_arch=[8, 8])


def _flat(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def _fill(model) -> None:
    model.set_logger(configure(None, [""]))
    rng = np.random.default_rng(5)
    for _ in range(64):
        obs = rng.normal(size=(1, 3)).astype(np.float32)
        model.replay_buffer.add(
            obs, obs * 0.9, rng.uniform(-1, 1, (1, 1)), rng.normal(size=1), rng.random(1) < 0.1, [{}]
        )


def _make(cls=TD3, seed: int = 0, compile: bool = True, **kwargs):
    kwargs.setdefault("policy_kwargs", SMALL)
    model = cls("MlpPolicy", ENV_ID, batch_size=16, seed=seed, _init_setup_model=False, **kwargs)
    model._compile = compile
    model._setup_model()
    _fill(model)
    return model


def _changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not np.array_equal(before[k], after[k]) for k in after if k.startswith(prefix)]


def test_policy_delay_updates_actor_and_targets_every_second_step():
    tau = 0.2
    model = _make(tau=tau)
    p0 = _flat(model.policy.parameters())
    model.train(gradient_steps=1, batch_size=16)  # update 1: critic only
    p1 = _flat(model.policy.parameters())
    assert all(_changed(p0, p1, "critic."))
    assert not any(_changed(p0, p1, "actor.")) and not any(_changed(p0, p1, "actor_target."))
    assert not any(_changed(p0, p1, "critic_target."))
    model.train(gradient_steps=1, batch_size=16)  # update 2: critic, actor, Polyak targets
    p2 = _flat(model.policy.parameters())
    assert all(_changed(p1, p2, "actor.")) and all(_changed(p1, p2, "critic."))
    for online in ("actor", "critic"):
        for key in (k for k in p2 if k.startswith(f"{online}_target.")):
            source = p2[f"{online}." + key[len(online) + len("_target.") :]]
            np.testing.assert_allclose(p2[key], tau * source + (1 - tau) * p1[key], rtol=1e-5, atol=1e-7)
    assert model._n_updates == 2
    assert not any(
        k.startswith(("actor_target", "critic_target")) for k in _flat(model.policy.trainable_parameters())
    )


def test_target_without_smoothing_matches_numpy_and_smoothing_noise_is_clipped():
    model = _make()
    policy = model.policy
    rng = np.random.default_rng(1)
    next_obs = rng.normal(size=(5, 3)).astype(np.float32)
    rewards = rng.normal(size=(5, 1)).astype(np.float32)
    dones = np.array([[0], [1], [0], [0], [1]], dtype=np.float32)
    gamma = 0.95
    batch = tuple(
        mx.array(a)
        for a in (
            next_obs,
            np.zeros((5, 1), np.float32),
            next_obs,
            dones,
            rewards,
            np.full((5, 1), gamma, np.float32),
        )
    )
    target = np.array(td3_target_q(policy, batch, mx.array(0.0), mx.array(0.0)))
    next_actions = policy.actor_target(mx.array(next_obs))
    q = np.concatenate([np.array(x) for x in policy.critic_target(mx.array(next_obs), next_actions)], axis=1)
    expected = rewards + (1 - dones) * gamma * q.min(axis=1, keepdims=True)
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-6)
    # Huge noise clipped to +-c: the target lies within the range of Q over [a - c, a + c] (clipped to [-1, 1])
    c = 0.3
    noisy = np.array(td3_target_q(policy, batch, mx.array(100.0), mx.array(c)))
    grid = np.linspace(-c, c, 61, dtype=np.float32)
    candidates = []
    for delta in grid:
        actions = mx.clip(next_actions + float(delta), -1.0, 1.0)
        qs = np.concatenate([np.array(x) for x in policy.critic_target(mx.array(next_obs), actions)], axis=1)
        candidates.append(rewards + (1 - dones) * gamma * qs.min(axis=1, keepdims=True))
    stacked = np.stack(candidates)
    assert np.all(noisy >= stacked.min(0) - 1e-4) and np.all(noisy <= stacked.max(0) + 1e-4)
    # and the extremes +-c are actually reached (noise of std 100 is almost always clipped)
    near_edge = np.minimum(np.abs(noisy - candidates[0]), np.abs(noisy - candidates[-1]))
    assert np.all(near_edge[dones[:, 0] == 0] < 1e-4)


def test_compiled_steps_equal_uncompiled_steps():
    results = []
    for compile in (True, False):
        model = _make(seed=11, compile=compile)
        np.random.seed(0)
        mx.random.seed(2)
        model.train(gradient_steps=2, batch_size=16)
        results.append(_flat(model.policy.parameters()))
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_ddpg_is_td3_without_the_tricks():
    model = _make(DDPG)
    assert model.policy_delay == 1 and model.target_policy_noise == 0.0 and model.target_noise_clip == 0.0
    assert model.policy.critic.n_critics == 1
    p0 = _flat(model.policy.parameters())
    model.train(gradient_steps=1, batch_size=16)
    p1 = _flat(model.policy.parameters())
    assert all(_changed(p0, p1, "actor.")) and all(_changed(p0, p1, "actor_target."))
    assert (
        DDPG("MlpPolicy", ENV_ID, policy_kwargs=dict(net_arch=[4], n_critics=2)).policy.critic.n_critics == 2
    )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="policy_delay"):
        TD3("MlpPolicy", ENV_ID, policy_delay=0)
    with pytest.raises(ValueError, match="Box"):
        TD3("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="'pi' and 'qf'"):
        TD3("MlpPolicy", ENV_ID, policy_kwargs=dict(net_arch=dict(pi=[8])))


@pytest.mark.parametrize("cls", [TD3, DDPG])
def test_learn_save_load_round_trip(cls, tmp_path):
    from mlx_baselines3.common.noise import NormalActionNoise

    noise = NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))
    model = cls(
        "MlpPolicy",
        ENV_ID,
        policy_kwargs=SMALL,
        batch_size=16,
        learning_starts=20,
        seed=0,
        action_noise=noise,
    )
    model.learn(40)
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model", env=ENV_ID)
    saved, restored = _flat(model.policy.parameters()), _flat(loaded.policy.parameters())
    assert saved.keys() == restored.keys()
    for key in saved:
        np.testing.assert_array_equal(saved[key], restored[key], err_msg=key)
    for name in ("actor", "critic"):
        a, b = _flat(getattr(model, name).optimizer.state), _flat(getattr(loaded, name).optimizer.state)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}.optimizer {key}")
    assert loaded._n_updates == model._n_updates
    loaded.learn(10, reset_num_timesteps=False)


def test_non_finite_loss_skips_the_updates_and_raises():
    from mlx_baselines3.common.on_policy_algorithm import NonFiniteLossError

    model = _make()
    model.replay_buffer.rewards[:] = np.nan
    before = _flat(model.policy.parameters())
    with pytest.raises(NonFiniteLossError, match="critic_loss"):
        model.train(gradient_steps=2, batch_size=16)
    for key, value in _flat(model.policy.parameters()).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)

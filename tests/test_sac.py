"""SAC: losses against a NumPy reference, the compiled update, targets, entropy coefficient, save/load."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3.common.distributions import SquashedDiagGaussianDistribution
from mlx_baselines3.common.logger import configure
from mlx_baselines3.sac import SAC
from mlx_baselines3.sac.sac import sac_target_q

ENV_ID = "Pendulum-v1"
SMALL = dict(net_arch=[8, 8])


def _flat(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree)}


def _make(seed: int = 0, compile: bool = True, **kwargs) -> SAC:
    kwargs.setdefault("policy_kwargs", SMALL)
    model = SAC("MlpPolicy", ENV_ID, batch_size=16, seed=seed, _init_setup_model=False, **kwargs)
    model._compile = compile
    model._setup_model()
    model.set_logger(configure(None, [""]))
    rng = np.random.default_rng(123)
    buffer = model.replay_buffer
    for _ in range(64):
        obs = rng.normal(size=(1, 3)).astype(np.float32)
        buffer.add(obs, obs + 0.1, rng.uniform(-1, 1, (1, 1)), rng.normal(size=1), rng.random(1) < 0.1, [{}])
    return model


def _np_mlp(params: dict[str, np.ndarray], prefix: str, x: np.ndarray, n_layers: int) -> np.ndarray:
    """Forward pass of Sequential(Linear, ReLU, ..., Linear) from its weights, in float64."""
    for i in range(n_layers):
        weight = params[f"{prefix}.layers.{2 * i}.weight"].astype(np.float64)
        bias = params[f"{prefix}.layers.{2 * i}.bias"].astype(np.float64)
        x = x @ weight.T + bias
        if i < n_layers - 1:
            x = np.maximum(x, 0.0)
    return x


def test_soft_bellman_target_matches_numpy_reference_and_stops_at_terminals():
    model = _make()
    params = _flat(model.policy.parameters())
    rng = np.random.default_rng(0)
    next_obs = rng.normal(size=(6, 3)).astype(np.float32)
    rewards = rng.normal(size=(6, 1)).astype(np.float32)
    dones = np.array([[0], [1], [0], [1], [0], [0]], dtype=np.float32)
    noise = rng.normal(size=(6, 1)).astype(np.float32)
    gamma, alpha = 0.9, 0.3
    batch = tuple(
        mx.array(a) for a in (next_obs, noise, next_obs, dones, rewards, np.full((6, 1), gamma, np.float32))
    )
    target = np.array(sac_target_q(model.policy, batch, mx.array(alpha), mx.array(noise)))

    # NumPy reference: actor -> squashed Gaussian sample and log-prob -> min of target critics
    latent = np.maximum(_np_mlp(params, "actor.latent_pi", next_obs, 2), 0.0)
    mean = latent @ params["actor.mu.weight"].T.astype(np.float64) + params["actor.mu.bias"]
    log_std = np.clip(
        latent @ params["actor.log_std.weight"].T.astype(np.float64) + params["actor.log_std.bias"], -20, 2
    )
    u = mean + np.exp(log_std) * noise
    a = np.tanh(u)
    log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi) - np.log(1 - np.tanh(u) ** 2)).sum(1)
    q_in = np.concatenate([next_obs, a], axis=1)
    q = np.concatenate([_np_mlp(params, f"critic_target.q_networks.{i}", q_in, 3) for i in range(2)], axis=1)
    soft_v = q.min(axis=1, keepdims=True) - alpha * log_prob[:, None]
    expected = rewards + (1 - dones) * gamma * soft_v
    np.testing.assert_allclose(target, expected, rtol=1e-4, atol=1e-5)
    # terminal transitions are exactly the reward
    np.testing.assert_array_equal(target[dones[:, 0] == 1], rewards[dones[:, 0] == 1])


def test_gradient_step_changes_every_trainable_array_and_polyak_averages_the_target():
    tau = 0.1
    model = _make(tau=tau)
    before = _flat(model.policy.parameters())
    log_ent_before = float(np.array(model.log_ent_coef)[0])
    model.train(gradient_steps=1, batch_size=16)
    after = _flat(model.policy.parameters())
    trainable = _flat(model.policy.trainable_parameters())
    assert not any(k.startswith("critic_target") for k in trainable)
    assert any(k.startswith("actor.") for k in trainable) and any(k.startswith("critic.") for k in trainable)
    for key in trainable:
        assert not np.array_equal(before[key], after[key]), f"{key} did not change"
    for key in (k for k in after if k.startswith("critic_target.")):
        online = after["critic." + key[len("critic_target.") :]]
        np.testing.assert_allclose(after[key], tau * online + (1 - tau) * before[key], rtol=1e-5, atol=1e-7)
    assert float(np.array(model.log_ent_coef)[0]) != log_ent_before
    assert model._n_updates == 1
    # a few more steps: the target keeps tracking the critic
    model.train(gradient_steps=3, batch_size=16)
    assert model._n_updates == 4


def test_target_update_interval_skips_target_updates():
    targets = []
    for interval, steps in ((2, 2), (1, 1)):
        model = _make(seed=3, target_update_interval=interval, tau=0.5)
        np.random.seed(0)
        mx.random.seed(1)
        model.train(gradient_steps=steps, batch_size=16)
        targets.append(_flat(model.policy.critic_target.parameters()))
    # interval 2: the target moved at gradient step 0 only, so it equals the target after one step
    for key, value in targets[0].items():
        np.testing.assert_allclose(value, targets[1][key], rtol=1e-6, atol=1e-8, err_msg=key)


def test_compiled_step_equals_uncompiled_step():
    results = []
    for compile in (True, False):
        model = _make(seed=7, compile=compile)
        np.random.seed(0)
        mx.random.seed(1)
        model.train(gradient_steps=2, batch_size=16)
        results.append((_flat(model.policy.parameters()), float(np.array(model.log_ent_coef)[0])))
    (compiled, ent_c), (eager, ent_e) = results
    assert compiled.keys() == eager.keys()
    for key in compiled:
        np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert ent_c == pytest.approx(ent_e, rel=1e-6)


def test_entropy_coefficient_options():
    model = _make(ent_coef="auto_0.1", target_entropy=-0.5)
    assert math.exp(float(np.array(model.log_ent_coef)[0])) == pytest.approx(0.1, rel=1e-6)
    assert model.target_entropy == -0.5
    assert _make().target_entropy == -1.0  # -dim(A) for Pendulum
    fixed = _make(ent_coef=0.2)
    assert fixed.log_ent_coef is None and fixed.ent_coef_optimizer is None
    fixed.train(gradient_steps=1, batch_size=16)
    assert fixed.logger.name_to_value["train/ent_coef"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="ent_coef"):
        _make(ent_coef="automatic_x")
    with pytest.raises(ValueError, match="greater than 0"):
        _make(ent_coef="auto_-1")


def test_squashed_gaussian_log_prob_near_the_bounds_is_finite_and_exact():
    dist = SquashedDiagGaussianDistribution(1)
    u = np.array([0.0, 3.0, 6.0, 9.0, 12.0, 20.0, -15.0], dtype=np.float64)
    mean, log_std = 0.5, -0.3
    dist.proba_distribution(mx.full((len(u), 1), mean), mx.full((len(u), 1), log_std))
    actions = np.tanh(u).astype(np.float32)[:, None]
    log_prob = np.array(dist.log_prob(mx.array(actions), mx.array(u.astype(np.float32)[:, None])))
    # float64 reference with log(1 - tanh(u)^2) = log 4 - 2|u| - 2 log(1 + exp(-2|u|))
    std = math.exp(log_std)
    gaussian = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = math.log(4.0) - 2 * np.abs(u) - 2 * np.log1p(np.exp(-2 * np.abs(u)))
    np.testing.assert_allclose(log_prob, gaussian - log_det, rtol=1e-5, atol=1e-4)
    # Without the pre-tanh values the actions are clipped before atanh: finite even at |a| = 1
    edge = np.array([[1.0], [-1.0], [0.9999], [-0.99999]], dtype=np.float32)
    dist.proba_distribution(mx.full((4, 1), mean), mx.full((4, 1), log_std))
    edge_lp = np.array(dist.log_prob(mx.array(edge)))
    assert np.all(np.isfinite(edge_lp))
    u_edge = np.arctanh(edge[2:, 0].astype(np.float64))
    ref = (
        -0.5 * ((u_edge - mean) / std) ** 2
        - log_std
        - 0.5 * math.log(2 * math.pi)
        - np.log(1 - edge[2:, 0].astype(np.float64) ** 2)
    )
    np.testing.assert_allclose(edge_lp[2:], ref, rtol=2e-3)


def test_actor_log_std_is_clipped_and_actions_are_in_bounds():
    model = _make()
    actor = model.policy.actor
    obs = mx.array(np.full((4, 3), 1e4, dtype=np.float32))  # extreme inputs push log_std out of range
    _, log_std, _ = actor.get_action_dist_params(obs)
    assert float(mx.max(log_std)) <= 2.0 and float(mx.min(log_std)) >= -20.0
    actions, _ = model.predict(np.zeros((5, 3), dtype=np.float32))
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 2.0)


def test_learn_save_load_round_trip(tmp_path):
    model = SAC("MlpPolicy", ENV_ID, policy_kwargs=SMALL, batch_size=16, learning_starts=20, seed=0)
    model.learn(40)
    assert model._n_updates > 0
    path = tmp_path / "sac"
    model.save(path)
    loaded = SAC.load(path, env=ENV_ID)
    assert _flat(loaded.policy.parameters()).keys() == _flat(model.policy.parameters()).keys()
    for key, value in _flat(model.policy.parameters()).items():
        np.testing.assert_array_equal(value, _flat(loaded.policy.parameters())[key], err_msg=key)
    np.testing.assert_array_equal(np.array(loaded.log_ent_coef), np.array(model.log_ent_coef))
    for name in ("actor", "critic"):
        saved_state = _flat(getattr(model, name).optimizer.state)
        loaded_state = _flat(getattr(loaded, name).optimizer.state)
        for key, value in saved_state.items():
            np.testing.assert_array_equal(value, loaded_state[key], err_msg=f"{name}.optimizer {key}")
    assert int(np.array(loaded.ent_coef_optimizer.state["step"])) == int(
        np.array(model.ent_coef_optimizer.state["step"])
    )
    obs = np.zeros((2, 3), dtype=np.float32)
    np.testing.assert_allclose(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    # the loaded model trains (its compiled step is bound to the loaded arrays)
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded._n_updates > model._n_updates


def test_non_finite_loss_skips_the_updates_and_names_the_term():
    from mlx_baselines3.common.on_policy_algorithm import NonFiniteLossError

    model = _make()
    model.replay_buffer.rewards[:] = np.nan
    before = _flat(model.policy.parameters())
    opt_before = _flat(model.critic.optimizer.state)
    with pytest.raises(NonFiniteLossError, match="critic_loss at gradient step 0"):
        model.train(gradient_steps=3, batch_size=16)
    after = _flat(model.policy.parameters())
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    for key, value in _flat(model.critic.optimizer.state).items():
        if key != "learning_rate":
            np.testing.assert_array_equal(value, opt_before[key], err_msg=key)
    # once the data is finite again, training resumes
    model.replay_buffer.rewards[:] = 0.0
    model.train(gradient_steps=1, batch_size=16)
    assert not np.array_equal(
        _flat(model.policy.parameters())["critic.q_networks.0.layers.0.weight"],
        before["critic.q_networks.0.layers.0.weight"],
    )

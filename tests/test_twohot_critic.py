"""The opt-in two-hot critic of PPO / A2C (``policy_kwargs=dict(value_head="twohot")``).

The value loss and decoded values are checked against a NumPy reference written here from the
definition: bins ``linspace(-20, 20, K)`` in symlog space, a target ``symlog(G)`` split between its
two neighbouring bins by linear interpolation, the soft cross-entropy against ``log_softmax``,
and values ``symexp(sum softmax * bins)``.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3 import A2C, PPO
from mlx_baselines3.a2c.a2c import a2c_loss
from mlx_baselines3.common.policies import ActorCriticPolicy
from mlx_baselines3.ppo.ppo import ppo_loss
from mlx_baselines3.world_models import TwoHot, twohot_value_loss

SMALL_PPO = dict(n_steps=16, batch_size=16, n_epochs=2)
OBS_SPACE = spaces.Box(-1.0, 1.0, (4,), np.float32)
TWOHOT = dict(value_head="twohot")


def make_policy(**kwargs):
    policy = ActorCriticPolicy(OBS_SPACE, spaces.Discrete(2), lambda _: 1e-3, **kwargs)
    mx.eval(policy.parameters())
    return policy


def np_params(policy):
    return {k: np.array(v) for k, v in policy.state_dict().items()}


# -- NumPy reference ------------------------------------------------------------------------------


def np_symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def np_symexp(x):
    return np.sign(x) * np.expm1(np.abs(x))


def np_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_twohot_target(returns, num_bins=255, low=-20.0, high=20.0):
    bins = np.linspace(low, high, num_bins)
    y = np.clip(np_symlog(returns.astype(np.float64)), low, high)
    target = np.zeros((len(y), num_bins))
    for row, value in enumerate(y):
        above = min(int(np.searchsorted(bins, value, side="right")), num_bins - 1)
        below = above - 1
        weight_above = (value - bins[below]) / (bins[above] - bins[below])
        target[row, below] = 1.0 - weight_above
        target[row, above] = weight_above
    return target


def np_twohot_loss(logits, returns, **bins):
    target = np_twohot_target(returns, **bins)
    return float(np.mean(-(target * np_log_softmax(logits.astype(np.float64))).sum(axis=-1)))


def np_values(logits, num_bins=255, low=-20.0, high=20.0):
    probs = np.exp(np_log_softmax(logits.astype(np.float64)))
    return np_symexp(probs @ np.linspace(low, high, num_bins))


def critic_logits(policy, obs):
    return policy.value_net(policy.mlp_extractor.forward_critic(obs))


def random_batch(rng, batch=16, return_scale=1000.0):
    return dict(
        observations=mx.array(rng.uniform(-1, 1, (batch, 4)).astype(np.float32)),
        actions=mx.array(rng.integers(0, 2, (batch, 1)).astype(np.float32)),
        old_values=mx.array(rng.normal(size=batch).astype(np.float32)),
        old_log_prob=mx.array(np.full(batch, np.log(0.5), np.float32)),
        advantages=mx.array(rng.normal(size=batch).astype(np.float32)),
        returns=mx.array((rng.normal(size=batch) * return_scale).astype(np.float32)),
    )


def randomise_value_layer(policy, rng):
    """Move the zero-initialised two-hot layer so its logits are not all equal."""
    policy.value_net.weight = mx.array(rng.normal(0.0, 0.5, policy.value_net.weight.shape).astype(np.float32))
    policy.value_net.bias = mx.array(rng.normal(0.0, 0.5, policy.value_net.bias.shape).astype(np.float32))


HYPER = dict(clip_range=mx.array(0.2), ent_coef=mx.array(0.01), vf_coef=mx.array(0.5))


# -- construction ---------------------------------------------------------------------------------


def test_twohot_value_layer_has_k_zero_outputs_and_predicts_zero():
    policy = make_policy(**TWOHOT)  # ortho_init=True must not override the zero init
    assert policy.value_net.weight.shape == (255, 64)
    assert policy.value_net.bias.shape == (255,)
    assert not np.any(np.array(policy.value_net.weight)) and not np.any(np.array(policy.value_net.bias))
    obs = mx.array(np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32))
    values = policy.predict_values(obs)
    assert values.shape == (5, 1)
    np.testing.assert_array_equal(np.array(values), 0.0)
    _, call_values, _ = policy(obs)
    eval_values, _, _ = policy.evaluate_actions(obs, mx.zeros((5,), mx.int32))
    np.testing.assert_array_equal(np.array(call_values), 0.0)
    np.testing.assert_array_equal(np.array(eval_values), 0.0)
    assert call_values.shape == eval_values.shape == (5, 1)

    narrow = make_policy(value_head="twohot", value_head_kwargs=dict(num_bins=51, low=-5.0, high=5.0))
    assert narrow.value_net.weight.shape == (51, 64)


def test_bins_are_not_parameters():
    twohot, mse = make_policy(**TWOHOT), make_policy()
    assert set(twohot.state_dict()) == set(mse.state_dict())
    assert set(twohot.parameters()) <= {"mlp_extractor", "action_net", "value_net", "features_extractor"}
    assert not any(isinstance(v, mx.array) for v in vars(twohot).values())


def test_default_head_is_unchanged():
    policy = make_policy()
    shapes = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    assert shapes["value_net.weight"] == (1, 64) and shapes["value_net.bias"] == (1,)
    assert [k for k in shapes if k.startswith("value_net")] == ["value_net.weight", "value_net.bias"]
    # SB3's orthogonal init, gain 1, on the scalar value layer
    np.testing.assert_allclose(np.linalg.norm(np.array(policy.value_net.weight)), 1.0, rtol=1e-5)
    params = policy._get_constructor_parameters()
    assert params["value_head"] == "mse" and params["value_head_kwargs"] == {}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="value_head must be one of"):
        make_policy(value_head="mae")
    with pytest.raises(ValueError, match="Unknown value_head_kwargs.*'bins'"):
        make_policy(value_head="twohot", value_head_kwargs=dict(bins=11))
    with pytest.raises(ValueError, match="only used with value_head='twohot'"):
        make_policy(value_head_kwargs=dict(num_bins=11))
    with pytest.raises(ValueError, match="clip_range_vf is not supported with value_head='twohot'"):
        PPO("MlpPolicy", "CartPole-v1", clip_range_vf=0.2, policy_kwargs=TWOHOT, **SMALL_PPO)
    policy = make_policy(**TWOHOT)
    batch = random_batch(np.random.default_rng(0))
    with pytest.raises(ValueError, match="clip_range_vf is not supported"):
        policy.evaluate_actions_and_value_loss(
            batch["observations"],
            batch["actions"].reshape(-1).astype(mx.int32),
            batch["returns"],
            old_values=batch["old_values"],
            clip_range_vf=mx.array(0.2),
        )


# -- the loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_name", ["ppo", "a2c"])
def test_loss_is_the_twohot_loss_of_the_value_logits(loss_name):
    rng = np.random.default_rng(1)
    policy = make_policy(**TWOHOT)
    randomise_value_layer(policy, rng)
    batch = random_batch(rng)
    loss_fn = ppo_loss if loss_name == "ppo" else a2c_loss
    loss, terms = loss_fn(policy, batch, HYPER)
    value_loss = float(terms[1])

    logits = critic_logits(policy, batch["observations"])
    returns = np.array(batch["returns"])
    np.testing.assert_allclose(value_loss, np_twohot_loss(np.array(logits), returns), rtol=1e-5)
    np.testing.assert_allclose(
        value_loss, float(twohot_value_loss(logits, batch["returns"], TwoHot())), rtol=1e-6
    )
    policy_term, entropy_term = float(terms[0]), float(terms[2])
    np.testing.assert_allclose(float(loss), policy_term + 0.01 * entropy_term + 0.5 * value_loss, rtol=1e-5)
    # Values used everywhere else are the decoded expectation, raw scale.
    np.testing.assert_allclose(
        np.array(policy.predict_values(batch["observations"])).reshape(-1),
        np_values(np.array(logits)),
        rtol=1e-4,
    )


def test_value_gradient_is_softmax_minus_twohot_target():
    rng = np.random.default_rng(2)
    policy = make_policy(**TWOHOT)
    randomise_value_layer(policy, rng)
    batch = random_batch(rng)
    _, grads = nn.value_and_grad(policy, lambda p, b, h: ppo_loss(p, b, h)[0])(policy, batch, HYPER)
    logits = np.array(critic_logits(policy, batch["observations"])).astype(np.float64)
    expected = 0.5 * (np.exp(np_log_softmax(logits)) - np_twohot_target(np.array(batch["returns"]))).mean(
        axis=0
    )
    np.testing.assert_allclose(np.array(grads["value_net"]["bias"]), expected, atol=1e-6)


def test_zero_initialised_layer_blocks_the_trunk_gradient_on_the_first_step():
    policy = make_policy(**TWOHOT)
    batch = random_batch(np.random.default_rng(3))
    _, grads = nn.value_and_grad(policy, lambda p, b, h: ppo_loss(p, b, h)[0])(policy, batch, HYPER)
    trunk = grads["mlp_extractor"]["value_net"]["layers"]
    assert not any(np.any(np.array(layer[key])) for layer in trunk if layer for key in layer)
    assert np.any(np.array(grads["value_net"]["weight"])) and np.any(np.array(grads["value_net"]["bias"]))


def test_mse_value_loss_matches_numpy_with_and_without_clipping():
    rng = np.random.default_rng(4)
    policy = make_policy()
    batch = random_batch(rng, return_scale=3.0)
    actions = batch["actions"].reshape(-1).astype(mx.int32)
    values = np.array(policy.predict_values(batch["observations"])).reshape(-1).astype(np.float64)
    returns, old = np.array(batch["returns"]), np.array(batch["old_values"])
    plain, _, _ = policy.evaluate_actions_and_value_loss(batch["observations"], actions, batch["returns"])
    np.testing.assert_allclose(float(plain), np.mean((returns - values) ** 2), rtol=1e-5)
    clipped, _, _ = policy.evaluate_actions_and_value_loss(
        batch["observations"],
        actions,
        batch["returns"],
        old_values=batch["old_values"],
        clip_range_vf=mx.array(0.1),
    )
    np.testing.assert_allclose(
        float(clipped), np.mean((returns - (old + np.clip(values - old, -0.1, 0.1))) ** 2), rtol=1e-5
    )


# -- algorithms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_twohot_ppo_and_a2c_learn_and_predict(algo):
    kwargs = SMALL_PPO if algo is PPO else dict(n_steps=16)
    model = algo("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs=TWOHOT, **kwargs)
    before = np_params(model.policy)
    model.learn(64)
    after = np_params(model.policy)
    assert model.policy.value_net.weight.shape == (255, 64)
    for name in ("value_net.weight", "value_net.bias", "action_net.weight"):
        assert not np.array_equal(before[name], after[name]), f"{name} did not change"
    obs = np.random.default_rng(0).uniform(-0.05, 0.05, (3, 4)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (3,) and set(actions.tolist()) <= {0, 1}
    values = np.array(model.policy.predict_values(mx.array(obs)))
    assert values.shape == (3, 1) and np.all(np.isfinite(values)) and np.any(values != 0)


def test_save_load_round_trip_keeps_the_twohot_head(tmp_path):
    policy_kwargs = dict(value_head="twohot", value_head_kwargs=dict(num_bins=101, low=-10.0, high=10.0))
    model = PPO("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs=policy_kwargs, **SMALL_PPO).learn(32)
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip")
    assert loaded.policy.value_head == "twohot"
    assert loaded.policy.value_net.weight.shape == (101, 64)
    for name, value in np_params(model.policy).items():
        np.testing.assert_array_equal(value, np.array(loaded.policy.state_dict()[name]), err_msg=name)
    obs = np.random.default_rng(1).uniform(-0.1, 0.1, (6, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    np.testing.assert_array_equal(
        np.array(loaded.policy.predict_values(mx.array(obs))),
        np.array(model.policy.predict_values(mx.array(obs))),
    )
    np.testing.assert_allclose(
        np.array(model.policy.predict_values(mx.array(obs))).reshape(-1),
        np_values(np.array(critic_logits(model.policy, mx.array(obs))), num_bins=101, low=-10.0, high=10.0),
        rtol=1e-4,
    )
    model.policy.save(tmp_path / "policy.bin")
    policy = ActorCriticPolicy.load(tmp_path / "policy.bin")
    np.testing.assert_array_equal(
        np.array(policy.predict_values(mx.array(obs))), np.array(model.policy.predict_values(mx.array(obs)))
    )

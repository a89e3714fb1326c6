"""ActorCriticPolicy: architecture, initialisation, parameters API, predict shapes and errors."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.policies import ActorCriticPolicy
from mlx_baselines3.common.utils import ConstantSchedule

BOX_OBS = spaces.Box(-1, 1, (4,), np.float32)


def make_policy(**kwargs):
    action_space = kwargs.pop("action_space", spaces.Discrete(3))
    return ActorCriticPolicy(BOX_OBS, action_space, ConstantSchedule(3e-4), **kwargs)


def shapes(policy):
    return {k: tuple(v.shape) for k, v in policy.state_dict().items()}


def test_net_arch_list_and_dict_forms():
    p = shapes(make_policy(net_arch=[32, 16]))
    assert p["mlp_extractor.policy_net.layers.0.weight"] == (32, 4)
    assert p["mlp_extractor.value_net.layers.2.weight"] == (16, 32)
    assert p["action_net.weight"] == (3, 16) and p["value_net.weight"] == (1, 16)
    p = shapes(make_policy(net_arch=dict(pi=[8], vf=[12, 6])))
    assert p["action_net.weight"] == (3, 8)
    assert p["mlp_extractor.value_net.layers.2.weight"] == (6, 12)
    assert p["value_net.weight"] == (1, 6)
    p = shapes(make_policy(net_arch=[]))
    assert p["action_net.weight"] == (3, 4)


def test_default_architecture_is_sb3s():
    p = shapes(make_policy())
    assert p["mlp_extractor.policy_net.layers.0.weight"] == (64, 4)
    assert p["mlp_extractor.policy_net.layers.2.weight"] == (64, 64)
    assert p["mlp_extractor.value_net.layers.2.weight"] == (64, 64)


def _check_orthogonal(weight, gain):
    w = np.array(weight, dtype=np.float64).reshape(weight.shape[0], -1)
    small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(small, gain**2 * np.eye(small.shape[0]), atol=1e-4)


def test_orthogonal_init_uses_sb3_gains():
    policy = make_policy()
    _check_orthogonal(policy.mlp_extractor.policy_net.layers[0].weight, math.sqrt(2))
    _check_orthogonal(policy.mlp_extractor.value_net.layers[2].weight, math.sqrt(2))
    _check_orthogonal(policy.action_net.weight, 0.01)
    _check_orthogonal(policy.value_net.weight, 1.0)
    for name, value in policy.state_dict().items():
        if name.endswith("bias"):
            assert np.all(np.array(value) == 0), name


def test_log_std_init_and_activation():
    policy = make_policy(action_space=spaces.Box(-1, 1, (2,)), log_std_init=-1.5, activation_fn=nn.ReLU)
    np.testing.assert_allclose(np.array(policy.log_std), [-1.5, -1.5])
    assert isinstance(policy.mlp_extractor.policy_net.layers[1], nn.ReLU)
    assert "log_std" in policy.state_dict()


def test_separate_feature_extractors_are_distinct_parameters():
    policy = make_policy(share_features_extractor=False)
    obs = mx.array(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    actions, values, log_prob = policy(obs)
    assert actions.shape == (5,) and values.shape == (5, 1) and log_prob.shape == (5,)
    names = list(policy.state_dict())
    assert len(names) == len(set(names))
    # FlattenExtractor has no parameters; with a parametric extractor both copies must exist
    from mlx_baselines3.common.layers import BaseFeaturesExtractor

    class LinearExtractor(BaseFeaturesExtractor):
        def __init__(self, observation_space, features_dim=8):
            super().__init__(observation_space, features_dim)
            self.linear = nn.Linear(4, features_dim)

        def __call__(self, obs):
            return self.linear(obs)

    policy = make_policy(share_features_extractor=False, features_extractor_class=LinearExtractor)
    keys = policy.state_dict().keys()
    assert "features_extractor.linear.weight" in keys and "vf_features_extractor.linear.weight" in keys
    shared = make_policy(features_extractor_class=LinearExtractor)
    assert "vf_features_extractor.linear.weight" not in shared.state_dict()


def test_no_public_array_besides_parameters():
    policy = make_policy(action_space=spaces.Box(-1, 1, (2,)))
    # spaces, config and optimizer are not parameters
    for name in policy.state_dict():
        assert not name.startswith(("optimizer", "observation_space", "action_space", "net_arch"))
    assert len(policy.trainable_parameters()) > 0


def test_state_dict_round_trip_and_strict_errors():
    a, b = make_policy(), make_policy()
    b.load_state_dict(a.state_dict())
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(np.array(value), np.array(b.state_dict()[key]))
    state = dict(a.state_dict())
    state.pop("value_net.bias")
    state["extra.weight"] = mx.zeros((2,))
    with pytest.raises(ValueError, match=r"missing keys \['value_net.bias'\], unexpected keys \['extra.weight'\]"):
        b.load_state_dict(state)
    other_arch = make_policy(net_arch=[32, 32])
    with pytest.raises(ValueError, match=r"mis-shaped arrays .*layers.0.weight: expected \(64, 4\), got \(32, 4\)"):
        b.load_state_dict(other_arch.state_dict())
    # nothing was half-loaded
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(np.array(value), np.array(b.state_dict()[key]))


@pytest.mark.parametrize(
    "action_space,single_shape",
    [
        (spaces.Discrete(3), ()),
        (spaces.Box(-2, 2, (2,), np.float32), (2,)),
        (spaces.MultiDiscrete([2, 3]), (2,)),
        (spaces.MultiBinary(3), (3,)),
    ],
)
def test_predict_shapes_single_and_batched(action_space, single_shape):
    policy = make_policy(action_space=action_space)
    action, state = policy.predict(np.zeros(4, np.float32))
    assert action.shape == single_shape and state is None
    assert action_space.contains(action.astype(action_space.dtype))
    actions, _ = policy.predict(np.zeros((5, 4), np.float32), deterministic=True)
    assert actions.shape == (5, *single_shape)


def test_predict_rejects_wrong_shapes_and_gym_tuples():
    policy = make_policy()
    with pytest.raises(ValueError, match=r"Unexpected observation shape \(3,\) for Box environment"):
        policy.predict(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="You have passed a tuple"):
        policy.predict((np.zeros(4, np.float32), {}))


def test_box_actions_are_clipped_to_bounds():
    policy = make_policy(action_space=spaces.Box(-0.1, 0.1, (2,), np.float32), log_std_init=3.0)
    actions, _ = policy.predict(np.zeros((64, 4), np.float32))
    assert actions.min() >= -0.1 and actions.max() <= 0.1


def test_set_training_mode_reaches_every_submodule_even_after_a_child_is_replaced():
    from mlx_baselines3.common.layers import MlpExtractor

    policy = make_policy(activation_fn=nn.ReLU)
    policy.set_training_mode(False)
    assert not any(module.training for _, module in policy.named_modules())
    policy.mlp_extractor = MlpExtractor(4, [8], nn.ReLU)  # a new child starts in training mode
    policy.set_training_mode(True)
    policy.set_training_mode(False)
    assert not any(module.training for _, module in policy.named_modules())
    policy.set_training_mode(True)
    assert all(module.training for _, module in policy.named_modules())

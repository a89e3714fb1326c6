"""The NumPy replica used for rollouts computes the same function as the MLX policy."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gymnasium import spaces
from mlx.utils import tree_map

from mlx_baselines3 import PPO
from mlx_baselines3.common.numpy_inference import NumpyActorCritic
from mlx_baselines3.common.policies import ActorCriticPolicy
from mlx_baselines3.common.utils import ConstantSchedule

CASES = [
    (spaces.Box(-2, 2, (5,), np.float32), spaces.Discrete(4), {}),
    (spaces.Box(-2, 2, (5,), np.float32), spaces.Box(-1, 1, (3,), np.float32), dict(log_std_init=-0.7)),
    (spaces.Discrete(6), spaces.MultiDiscrete([3, 2]), dict(activation_fn=nn.ReLU)),
    (spaces.MultiDiscrete([2, 5]), spaces.MultiBinary(3), dict(net_arch=dict(pi=[16], vf=[8, 8]))),
    (spaces.MultiBinary(4), spaces.Discrete(2), dict(share_features_extractor=False, net_arch=[])),
]


def random_obs(space, n, rng):
    return np.stack([space.sample() for _ in range(n)]).astype(space.dtype)


@pytest.mark.parametrize("obs_space,action_space,kwargs", CASES)
def test_numpy_replica_matches_mlx_policy(obs_space, action_space, kwargs):
    obs_space.seed(0)
    policy = ActorCriticPolicy(obs_space, action_space, ConstantSchedule(1e-3), **kwargs)
    # make the parameters non-trivial (orthogonal init leaves zero biases and tiny action weights)
    policy.update(tree_map(lambda p: p + 0.3 * mx.random.normal(p.shape), policy.parameters()))
    replica = NumpyActorCritic.from_policy(policy)
    assert replica is not None
    rng = np.random.default_rng(0)
    obs = random_obs(obs_space, 16, rng)
    obs_mx, _ = policy.obs_to_tensor(obs)
    # deterministic actions and values agree
    actions, values, log_prob = replica(obs, deterministic=True)
    mlx_actions, mlx_values, mlx_log_prob = policy(obs_mx, deterministic=True)
    if isinstance(action_space, spaces.Box):
        np.testing.assert_allclose(actions, np.array(mlx_actions), rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_array_equal(actions.reshape(np.array(mlx_actions).shape), np.array(mlx_actions))
    np.testing.assert_allclose(values, np.array(mlx_values), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_prob, np.array(mlx_log_prob), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(replica.values(obs), np.array(policy.predict_values(obs_mx)), rtol=1e-4, atol=1e-5)
    # sampled actions are valid and their log-probabilities are the MLX policy's
    sampled, _, sampled_log_prob = replica(obs)
    eval_actions = mx.array(sampled)
    if isinstance(action_space, spaces.Discrete):
        eval_actions = eval_actions.reshape(-1)
    _, mlx_lp, _ = policy.evaluate_actions(obs_mx, eval_actions)
    np.testing.assert_allclose(sampled_log_prob, np.array(mlx_lp), rtol=1e-4, atol=1e-5)


def test_numpy_categorical_sampling_frequencies():
    policy = ActorCriticPolicy(spaces.Box(-1, 1, (2,), np.float32), spaces.Discrete(3), ConstantSchedule(1e-3))
    policy.action_net.weight = mx.zeros_like(policy.action_net.weight)
    policy.action_net.bias = mx.array(np.log([0.2, 0.5, 0.3]).astype(np.float32))
    replica = NumpyActorCritic(policy, rng=np.random.default_rng(1))
    actions, _, _ = replica(np.zeros((30000, 2), np.float32))
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / 30000, [0.2, 0.5, 0.3], atol=0.012)


def test_unsupported_policies_fall_back_to_mlx():
    from mlx_baselines3.common.layers import NatureCNN

    image = spaces.Box(0, 255, (3, 36, 36), np.uint8)
    cnn = ActorCriticPolicy(image, spaces.Discrete(2), ConstantSchedule(1e-3), features_extractor_class=NatureCNN)
    assert NumpyActorCritic.from_policy(cnn) is None
    gelu = ActorCriticPolicy(spaces.Box(-1, 1, (2,)), spaces.Discrete(2), ConstantSchedule(1e-3), activation_fn=nn.GELU)
    assert NumpyActorCritic.from_policy(gelu) is None
    twohot = ActorCriticPolicy(spaces.Box(-1, 1, (2,)), spaces.Discrete(2), ConstantSchedule(1e-3), value_head="twohot")
    assert NumpyActorCritic.from_policy(twohot) is None


def test_rollouts_use_it_on_cpu_and_both_paths_train():
    numpy_model = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    assert numpy_model._use_numpy_policy()
    numpy_model.learn(32)
    mlx_model = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    mlx_model.action_selection = "mlx"
    assert not mlx_model._use_numpy_policy()
    mlx_model.learn(32)
    assert numpy_model.num_timesteps == mlx_model.num_timesteps == 32
    with pytest.raises(ValueError, match="action_selection"):
        mlx_model.action_selection = "fast"
        mlx_model.learn(16)


# -- DQN's greedy action and TD3's deterministic actor --------------------------------------------


def _mlx_actions(policy, obs):
    obs_mx, _ = policy.obs_to_tensor(obs)
    return np.array(policy._predict(obs_mx, deterministic=True))


@pytest.mark.parametrize("activation_fn", [nn.ReLU, nn.Tanh])
def test_dqn_greedy_action_numpy_equals_mlx_and_follows_training(activation_fn):
    from mlx_baselines3 import DQN

    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=0,
        train_freq=8,
        gradient_steps=8,
        batch_size=16,
        policy_kwargs=dict(net_arch=[32, 32], activation_fn=activation_fn),
        seed=0,
    )
    policy = model.policy
    obs = np.random.default_rng(0).normal(scale=2.0, size=(256, 4)).astype(np.float32)
    numpy_actions = policy._predict_numpy(obs, deterministic=True)
    assert numpy_actions is not None
    np.testing.assert_array_equal(numpy_actions, _mlx_actions(policy, obs))
    q_before = policy.q_net._numpy_replicas["q_net"](obs).copy()
    model.learn(64)  # gradient steps replace the MLX parameters: the copy must follow
    after_numpy = policy._predict_numpy(obs, deterministic=True)
    np.testing.assert_array_equal(after_numpy, _mlx_actions(policy, obs))
    q_numpy = policy.q_net._numpy_replicas["q_net"](obs)
    q_mlx = np.array(policy.q_net(policy.obs_to_tensor(obs)[0]))
    np.testing.assert_allclose(q_numpy, q_mlx, rtol=1e-5, atol=1e-6)
    assert not np.allclose(q_numpy, q_before), "training changed the Q-values; a stale copy would not see it"
    # predict() (single and batched observation) returns the greedy action
    assert model.predict(obs[0], deterministic=True)[0] == after_numpy[0]
    np.testing.assert_array_equal(model.predict(obs[:5], deterministic=True)[0], after_numpy[:5])


def test_td3_actor_numpy_equals_mlx_after_training():
    from mlx_baselines3 import TD3

    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=0, train_freq=8, gradient_steps=4, batch_size=16, seed=0)
    obs = np.random.default_rng(1).uniform(-1, 1, size=(64, 3)).astype(np.float32)
    model.learn(40)
    numpy_actions = model.policy._predict_numpy(obs, deterministic=True)
    assert numpy_actions is not None
    np.testing.assert_allclose(numpy_actions, _mlx_actions(model.policy, obs), rtol=1e-5, atol=1e-6)
    unscaled, _ = model.predict(obs[:2], deterministic=True)
    np.testing.assert_allclose(unscaled, model.policy.unscale_action(numpy_actions[:2]), rtol=1e-5, atol=1e-6)


def test_numpy_actions_not_used_for_images_or_dicts():
    from mlx_baselines3 import DQN
    from mlx_baselines3.common.envs import SimpleMultiObsEnv

    model = DQN("MultiInputPolicy", SimpleMultiObsEnv(), learning_starts=0, buffer_size=100)
    obs = {key: np.stack([space.sample()] * 2) for key, space in model.observation_space.spaces.items()}
    assert model.policy._predict_numpy(obs, deterministic=True) is None
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (2,)


def test_sac_deterministic_actor_numpy_matches_mlx_after_training():
    from mlx_baselines3 import SAC

    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, train_freq=8, gradient_steps=4, batch_size=16, seed=0)
    obs = np.random.default_rng(2).uniform(-1, 1, size=(64, 3)).astype(np.float32)
    before = model.policy._predict_numpy(obs, deterministic=True)
    model.learn(40)  # the MLX parameters were replaced: the NumPy copies must follow
    numpy_mean = model.policy._predict_numpy(obs, deterministic=True)
    assert before is not None and numpy_mean is not None and not np.allclose(before, numpy_mean)
    np.testing.assert_allclose(numpy_mean, _mlx_actions(model.policy, obs), rtol=1e-5, atol=1e-6)
    unscaled, _ = model.predict(obs[0], deterministic=True)
    np.testing.assert_allclose(unscaled, model.policy.unscale_action(numpy_mean[0]), rtol=1e-5, atol=1e-6)
    # sampled actions (training) stay on the MLX path
    assert model.policy._predict_numpy(obs, deterministic=False) is None


def test_host_view_reads_mlx_memory_without_copying_and_cannot_write_it():
    import mlx.core as mx

    from mlx_baselines3.common.numpy_inference import host_view

    weight = mx.arange(12, dtype=mx.float32).reshape(3, 4)
    view = host_view(weight)
    np.testing.assert_array_equal(view, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert not view.flags.owndata  # MLX's buffer, not a copy
    assert np.shares_memory(view, host_view(weight))
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1.0  # NumPy must not write into an (immutable) MLX array
    assert weight[0, 0].item() == 0.0
    # strided MLX views come through with their strides
    np.testing.assert_array_equal(host_view(weight.T), np.arange(12, dtype=np.float32).reshape(3, 4).T)
    np.testing.assert_array_equal(host_view(weight[:, 1:3]), np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1:3])

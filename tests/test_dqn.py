"""DQN: loss against NumPy, target-network cadence across envs, exploration, compiled step, save/load."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from mlx_baselines3.common.env_util import make_vec_env
from mlx_baselines3.common.envs import SimpleMultiObsEnv
from mlx_baselines3.common.logger import configure
from mlx_baselines3.dqn import DQN
from mlx_baselines3.dqn.dqn import dqn_loss, dqn_target_q

ENV_ID = "CartPole-v1"
SMALL = dict(net_arch=[16])


def _flat(tree) -> dict[str, np.ndarray]:
    return {str(k): np.array(v) for k, v in dict(tree_flatten(tree)).items()}


def _make(compile: bool = True, seed: int = 0, **kwargs) -> DQN:
    kwargs.setdefault("policy_kwargs", SMALL)
    model = DQN("MlpPolicy", ENV_ID, batch_size=16, seed=seed, _init_setup_model=False, **kwargs)
    model._compile = compile
    model._setup_model()
    model.set_logger(configure(None, [""]))
    assert model.replay_buffer is not None
    rng = np.random.default_rng(2)
    for _ in range(64):
        obs = rng.normal(size=(1, 4)).astype(np.float32)
        model.replay_buffer.add(
            obs, obs + 0.1, rng.integers(0, 2, (1, 1)), rng.normal(size=1), rng.random(1) < 0.1, [{}]
        )
    return model


def test_loss_matches_numpy_huber_reference():
    model = _make()
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(8, 4)).astype(np.float32)
    next_obs = rng.normal(size=(8, 4)).astype(np.float32)
    actions = rng.integers(0, 2, size=(8, 1))
    rewards = (rng.normal(size=(8, 1)) * 3).astype(np.float32)  # both Huber branches
    dones = (rng.random((8, 1)) < 0.4).astype(np.float32)
    gamma = 0.9
    batch = tuple(
        mx.array(a) for a in (obs, actions, next_obs, dones, rewards, np.full((8, 1), gamma, np.float32))
    )
    loss = float(dqn_loss(model.policy.q_net, batch, dqn_target_q(model.policy.q_net_target, batch)))
    q = np.array(model.policy.q_net(mx.array(obs)))
    q_next = np.array(model.policy.q_net_target(mx.array(next_obs)))
    target = rewards + (1 - dones) * gamma * q_next.max(axis=1, keepdims=True)
    diff = np.abs(q[np.arange(8), actions[:, 0]][:, None] - target)
    assert np.any(diff > 1) and np.any(diff < 1)
    expected = np.mean(np.where(diff < 1, 0.5 * diff**2, diff - 0.5))
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("policy", ["MlpPolicy", "MultiInputPolicy"])
def test_targets_of_stacked_minibatches_equal_each_minibatchs_own(policy):
    """train() computes the targets of all the minibatches of a compiled call in one pass of the
    target network: each must equal that minibatch's own target, from a NumPy reference."""
    env = SimpleMultiObsEnv(random_start=False) if policy == "MultiInputPolicy" else ENV_ID
    model = DQN(policy, env, policy_kwargs=SMALL, learning_starts=0, batch_size=8, seed=1)
    model.learn(40)
    model.policy.q_net_target.update(tree_map(lambda p: p * 1.5, model.policy.q_net.parameters()))
    steps, batch_size = 3, 8
    batches = model._sample_batches(steps, batch_size)
    stacked = np.array(dqn_target_q(model.policy.q_net_target, batches))
    assert stacked.shape == (steps, batch_size, 1)
    _, _, next_obs, dones, rewards, discounts = (tree_map(np.array, leaf) for leaf in batches)
    for step in range(steps):
        step_obs = tree_map(lambda leaf, step=step: mx.array(leaf[step]), next_obs)
        next_q = np.array(model.policy.q_net_target(step_obs)).max(axis=1, keepdims=True)
        expected = rewards[step] + (1 - dones[step]) * discounts[step] * next_q
        assert np.any(dones[step] == 0)
        np.testing.assert_allclose(stacked[step], expected, rtol=1e-6, atol=1e-6)


def test_gradient_step_trains_q_net_only_and_clips_the_gradient():
    model = _make(max_grad_norm=1e-3)
    before = _flat(model.policy.parameters())
    model.train(gradient_steps=1, batch_size=16)
    after = _flat(model.policy.parameters())
    for key in after:
        changed = not np.array_equal(before[key], after[key])
        assert changed == key.startswith("q_net."), key
    # Adam's first step moves each parameter by ~lr regardless of the gradient scale: check the
    # clipped global norm instead, through the first moment (m = (1 - beta1) * clipped grad).
    first_moments = [np.array(v) for k, v in tree_flatten(model.policy.optimizer.state) if k.endswith(".m")]
    norm = np.sqrt(sum(np.sum(m**2) for m in first_moments)) / 0.1
    assert norm == pytest.approx(1e-3, rel=1e-3)


def test_compiled_step_equals_uncompiled_step():
    results = []
    for compile in (True, False):
        model = _make(compile=compile, seed=4)
        np.random.seed(0)
        model.train(gradient_steps=3, batch_size=16)
        results.append(_flat(model.policy.parameters()))
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("n_envs", [1, 4])
def test_target_network_updates_every_interval_env_steps(n_envs):
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=0)
    interval = 8
    model = DQN(
        "MlpPolicy",
        env,
        policy_kwargs=SMALL,
        learning_starts=0,
        batch_size=8,
        train_freq=1,
        target_update_interval=interval,
        seed=0,
    )
    calls_per_update = max(interval // n_envs, 1)
    copies = []

    original = model._update_target

    def spy() -> None:
        copies.append(model.num_timesteps)
        original()
        for key, value in _flat(model.q_net_target.parameters()).items():
            np.testing.assert_array_equal(value, _flat(model.q_net.parameters())[key])

    model._update_target = spy  # type: ignore[method-assign]
    model.learn(48)
    assert copies == [calls_per_update * n_envs * (i + 1) for i in range(48 // (calls_per_update * n_envs))]
    assert model._n_updates == 48 // n_envs


def test_exploration_schedule_and_epsilon_greedy_predict():
    model = DQN(
        "MlpPolicy",
        ENV_ID,
        policy_kwargs=SMALL,
        learning_starts=1000,
        exploration_fraction=0.5,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.1,
        seed=0,
    )
    model.learn(100)
    # progress 1 - 100/100 = 0 remaining: past the decay, final epsilon
    assert model.exploration_rate == pytest.approx(0.1)
    assert model.exploration_schedule(0.75) == pytest.approx(1.0 - 0.9 * 0.5)
    obs = np.zeros((64, 4), dtype=np.float32)
    greedy, _ = model.predict(obs, deterministic=True)
    assert greedy.shape == (64,) and len(set(greedy.tolist())) == 1
    model.exploration_rate = 1.0
    np.random.seed(0)
    random_actions = np.concatenate([model.predict(obs)[0] for _ in range(3)])
    assert set(random_actions.tolist()) == {0, 1}
    single, _ = model.predict(np.zeros(4, dtype=np.float32))
    assert np.ndim(single) == 0


def test_save_load_round_trip(tmp_path):
    model = DQN(
        "MlpPolicy",
        ENV_ID,
        policy_kwargs=SMALL,
        learning_starts=10,
        batch_size=8,
        train_freq=2,
        target_update_interval=7,
        seed=0,
    )
    model.learn(50)
    model.save(tmp_path / "dqn")
    loaded = DQN.load(tmp_path / "dqn", env=ENV_ID)
    for key, value in _flat(model.policy.parameters()).items():
        np.testing.assert_array_equal(value, _flat(loaded.policy.parameters())[key], err_msg=key)
    for key, value in _flat(model.policy.optimizer.state).items():
        np.testing.assert_array_equal(value, _flat(loaded.policy.optimizer.state)[key], err_msg=key)
    assert loaded._n_calls == model._n_calls == 50
    assert loaded.target_update_interval == 7 and loaded._n_updates == model._n_updates
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="Discrete"):
        DQN("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="exploration_final_eps"):
        DQN("MlpPolicy", ENV_ID, exploration_final_eps=1.5)
    with pytest.raises(ValueError, match="train_freq"):
        DQN("MlpPolicy", ENV_ID, train_freq=(4, "minute"))
    with pytest.raises(ValueError, match="gradient_steps"):
        DQN("MlpPolicy", ENV_ID, gradient_steps=-2)


def test_non_finite_loss_skips_the_update_and_raises():
    from mlx_baselines3.common.on_policy_algorithm import NonFiniteLossError

    model = _make()
    model.replay_buffer.rewards[:] = np.inf
    before = _flat(model.policy.parameters())
    with pytest.raises(NonFiniteLossError, match="loss"):
        model.train(gradient_steps=2, batch_size=16)
    for key, value in _flat(model.policy.parameters()).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_training_mode_of_targets_stays_off():
    model = _make()
    model.policy.set_training_mode(True)
    assert model.policy.q_net.training and not model.policy.q_net_target.training
    model.policy.set_training_mode(False)
    assert not model.policy.q_net.training and not model.policy.q_net_target.training
    model.policy.q_net_target.train(True)  # changed behind the policy's back: still corrected
    model.policy.set_training_mode(False)
    assert not model.policy.q_net_target.training


def _reference_dqn_train(
    params: dict[str, np.ndarray],
    batches: list[tuple[np.ndarray, ...]],
    sync_after: int,
    lr: float,
    gamma: float,
    max_grad_norm: float,
) -> dict[str, np.ndarray]:
    """SB3's DQN update written out in float64 NumPy for a one-hidden-layer ReLU Q-network.

    Huber loss (threshold 1, mean), global-norm clipping as ``torch.nn.utils.clip_grad_norm_``,
    PyTorch's Adam (bias correction in float64, eps 1e-8), and the target network copied from the
    online one after ``sync_after`` gradient steps.
    """
    online = {k: v.astype(np.float64) for k, v in params.items()}
    target = {k: v.copy() for k, v in online.items()}
    m = {k: np.zeros_like(v) for k, v in online.items()}
    v2 = {k: np.zeros_like(v) for k, v in online.items()}

    def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden = np.maximum(x @ p["w1"].T + p["b1"], 0.0)
        return hidden, hidden @ p["w2"].T + p["b2"]

    for step, (obs, actions, next_obs, dones, rewards) in enumerate(batches, start=1):
        if step == sync_after + 1:
            target = {k: v.copy() for k, v in online.items()}
        _, next_q = forward(target, next_obs.astype(np.float64))
        y = rewards + (1.0 - dones) * gamma * next_q.max(axis=1, keepdims=True)
        hidden, q = forward(online, obs.astype(np.float64))
        rows = np.arange(len(obs))
        diff = q[rows, actions[:, 0]] - y[:, 0]
        dq = np.zeros_like(q)
        dq[rows, actions[:, 0]] = np.clip(diff, -1.0, 1.0) / len(obs)
        dhidden = (dq @ online["w2"]) * (hidden > 0)
        grads = {"w2": dq.T @ hidden, "b2": dq.sum(0), "w1": dhidden.T @ obs, "b1": dhidden.sum(0)}
        norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
        coef = min(1.0, max_grad_norm / (norm + 1e-6))
        for key, grad in grads.items():
            grad = grad * coef
            m[key] = 0.9 * m[key] + 0.1 * grad
            v2[key] = 0.999 * v2[key] + 0.001 * grad**2
            m_hat, v_hat = m[key] / (1 - 0.9**step), v2[key] / (1 - 0.999**step)
            online[key] = online[key] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return online


def test_two_train_calls_with_a_target_sync_match_sb3_update_rule():
    """Several gradient steps, a target-network copy by ``_on_step`` and more steps: the parameters
    follow SB3's rule (float64 NumPy reference) step for step, so learning curves can be compared."""
    lr, gamma, steps, batch_size = 1e-2, 0.9, 4, 16
    model = _make(learning_rate=lr, gamma=gamma, max_grad_norm=0.3, target_update_interval=1)
    rng = np.random.default_rng(5)
    n = 2 * steps * batch_size
    stream = dict(
        observations=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.integers(0, 2, size=(n, 1)),
        next_observations=rng.normal(size=(n, 4)).astype(np.float32),
        dones=(rng.random((n, 1)) < 0.2).astype(np.float32),
        rewards=(rng.normal(size=(n, 1)) * 2).astype(np.float32),  # both Huber branches
    )
    served = [0]
    sample_type = type(model.replay_buffer.sample_numpy(1))

    def next_rows(count: int, env=None):  # the stream in order, however many rows a call asks for
        start, served[0] = served[0], served[0] + count
        return sample_type(**{k: v[start : start + count] for k, v in stream.items()})

    model.replay_buffer.sample_numpy = next_rows  # type: ignore[method-assign]
    layers = _flat(model.q_net.parameters())
    params = {
        "w1": layers["q_net.layers.0.weight"],
        "b1": layers["q_net.layers.0.bias"],
        "w2": layers["q_net.layers.2.weight"],
        "b2": layers["q_net.layers.2.bias"],
    }
    model.train(gradient_steps=steps, batch_size=batch_size)
    model._on_step()  # target_update_interval=1: copies the online network
    model.train(gradient_steps=steps, batch_size=batch_size)
    assert served[0] == n
    batches = [
        tuple(
            stream[k][i * batch_size : (i + 1) * batch_size]
            for k in ("observations", "actions", "next_observations", "dones", "rewards")
        )
        for i in range(2 * steps)
    ]
    expected = _reference_dqn_train(params, batches, steps, lr, gamma, max_grad_norm=0.3)
    got = _flat(model.q_net.parameters())
    for key, name in (("w1", "0.weight"), ("b1", "0.bias"), ("w2", "2.weight"), ("b2", "2.bias")):
        moved = np.abs(expected[key] - params[key]).max()
        assert moved > 3 * lr  # the parameters did move
        np.testing.assert_allclose(got[f"q_net.layers.{name}"], expected[key], rtol=0, atol=2e-5, err_msg=key)
    assert model._n_updates == 2 * steps


@pytest.mark.parametrize("tau", [1.0, 0.25])
def test_target_update_is_a_polyak_average_and_then_stays_put(tau):
    """``tau=1`` shares the online arrays (a free copy); a smaller ``tau`` averages. Either way, later
    gradient steps move the online network and leave the target where the update put it."""
    model = _make(tau=tau)
    model.train(gradient_steps=3, batch_size=16)  # online and target now differ
    online, before = _flat(model.q_net.parameters()), _flat(model.q_net_target.parameters())
    assert any(not np.array_equal(online[k], before[k]) for k in online)
    model._update_target()
    after = _flat(model.q_net_target.parameters())
    for key in online:
        np.testing.assert_allclose(
            after[key], tau * online[key] + (1 - tau) * before[key], rtol=1e-6, atol=1e-7
        )
    model.train(gradient_steps=3, batch_size=16)
    moved = _flat(model.q_net.parameters())
    assert any(not np.array_equal(moved[k], online[k]) for k in online)
    for key, value in _flat(model.q_net_target.parameters()).items():
        np.testing.assert_array_equal(value, after[key])

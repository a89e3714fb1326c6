"""An error while a compiled update is traced leaves the model as it was: it can be saved and trained."""

from __future__ import annotations

import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3 import DQN, PPO


def _arrays(tree) -> dict[str, np.ndarray]:
    return {key: np.array(value) for key, value in tree_flatten(tree)}


def _fail_once(monkeypatch, cls, name: str) -> None:
    """Make ``cls.<name>``'s result raise the first time it runs while a step is traced."""
    original = getattr(cls, name)
    failed: list[bool] = []

    def wrapped(self, *args, **kwargs):
        if not failed:
            failed.append(True)
            raise RuntimeError("failed while tracing")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_on_policy_update_that_fails_while_traced_is_undone(monkeypatch, tmp_path):
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=0)
    model.learn(32)
    before = (_arrays(model.policy.parameters()), _arrays(model.policy.optimizer.state))
    original = model._loss_config

    def loss_config():
        loss_fn, key = original()
        calls: list[int] = []

        def failing_loss(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("failed while tracing")
            return loss_fn(*args, **kwargs)

        return failing_loss, (key, "failing")

    monkeypatch.setattr(model, "_loss_config", loss_config)
    with pytest.raises(RuntimeError, match="failed while tracing"):
        model.train()
    _assert_same(_arrays(model.policy.parameters()), before[0])
    _assert_same(_arrays(model.policy.optimizer.state), before[1])
    model.save(tmp_path / "ppo")  # the arrays are real ones again
    model.learn(32, reset_num_timesteps=False)
    assert not np.array_equal(np.array(model.policy.action_net.weight), before[0]["action_net.weight"])


def test_off_policy_update_that_fails_while_traced_is_undone(monkeypatch, tmp_path):
    model = DQN(
        "MlpPolicy", "CartPole-v1", learning_starts=0, batch_size=8, train_freq=4, gradient_steps=4, seed=0
    )
    model.learn(16)
    before = (_arrays(model.policy.parameters()), _arrays(model.policy.optimizer.state))
    model._chunk_fns = {}  # trace again
    _fail_once(monkeypatch, DQN, "_gradient_step")
    with pytest.raises(RuntimeError, match="failed while tracing"):
        model.train(gradient_steps=4, batch_size=8)
    _assert_same(_arrays(model.policy.parameters()), before[0])
    _assert_same(_arrays(model.policy.optimizer.state), before[1])
    model.save(tmp_path / "dqn")
    model.train(gradient_steps=4, batch_size=8)
    assert not np.array_equal(
        np.array(model.policy.q_net.q_net.layers[0].weight), before[0]["q_net.q_net.layers.0.weight"]
    )

"""Flat parameter updates inside a compiled chunk: same numbers as the per-array update."""

from __future__ import annotations

import gymnasium as gym
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from gymnasium import spaces
from mlx.utils import tree_flatten

from mlx_baselines3 import A2C, PPO
from mlx_baselines3.common.compile import as_vector, scaled_update
from mlx_baselines3.common.flat_update import FlatTraining
from mlx_baselines3.common.optimizers import Adam, AdamW, RMSprop


def _arrays(tree) -> dict[str, np.ndarray]:
    return {key: np.array(value) for key, value in tree_flatten(tree)}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture
def packed_calls(monkeypatch) -> list[int]:
    """Counts the FlatTraining objects made (one per traced chunk that is packed)."""
    made: list[int] = []
    original = FlatTraining.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(FlatTraining, "__init__", counting)
    return made


def _trained(algo, env_id: str, flat: bool, steps: int, **kwargs):
    model = algo("MlpPolicy", env_id, seed=3, **kwargs)
    model.flat_update = flat
    model.learn(steps)
    return _arrays(model.policy.parameters()), _arrays(model.policy.optimizer.state), model._n_updates


@pytest.mark.parametrize(
    "algo, env_id, kwargs, steps",
    [
        (PPO, "CartPole-v1", dict(n_steps=64, batch_size=32, n_epochs=3), 256),
        # a continuous policy (its log_std is a parameter too) and guarded updates: target_kl stops
        # some epochs early (6 of 16 minibatch updates run)
        (PPO, "Pendulum-v1", dict(n_steps=64, batch_size=16, n_epochs=4, target_kl=1e-5), 256),
        # RMSprop (A2C's optimizer) with clipping active, several steps per compiled call
        (
            PPO,
            "CartPole-v1",
            dict(
                n_steps=64,
                batch_size=16,
                max_grad_norm=0.05,
                policy_kwargs=dict(optimizer_class=optim.RMSprop),
            ),
            128,
        ),
    ],
)
def test_training_with_flat_updates_is_bit_identical_to_per_array_updates(
    algo, env_id, kwargs, steps, packed_calls
):
    flat_params, flat_state, flat_updates = _trained(algo, env_id, True, steps, **kwargs)
    assert packed_calls  # the flat path ran
    packed_calls.clear()
    plain_params, plain_state, plain_updates = _trained(algo, env_id, False, steps, **kwargs)
    assert not packed_calls
    assert flat_updates == plain_updates
    if "target_kl" in kwargs:
        assert flat_updates < steps // kwargs["n_steps"] * kwargs["n_epochs"] * (
            kwargs["n_steps"] // kwargs["batch_size"]
        )
    _assert_same(flat_params, plain_params)
    _assert_same(flat_state, plain_state)  # moments, step count and learning rate, in the same layout


def test_packed_only_when_a_compiled_call_runs_several_steps(monkeypatch):
    """PPO's chunks of minibatch steps are packed; A2C's single step per call is not (packing a
    single step costs more than it saves)."""
    updates = []
    original = FlatTraining.update

    def counting(self, *args, **kwargs):
        updates.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FlatTraining, "update", counting)
    A2C("MlpPolicy", "CartPole-v1", seed=0).learn(50)
    assert not updates
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=0).learn(32)
    assert len(updates) == 4


def _module_and_optimizer(optimizer_class, **kwargs):
    mx.random.seed(0)
    module = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    optimizer = optimizer_class(learning_rate=0.1, **kwargs)
    optimizer.init(module.trainable_parameters())
    return module, optimizer


def _gradients(module):
    x = mx.random.normal((7, 3), key=mx.random.key(1))
    return nn.value_and_grad(module, lambda m: mx.sum(m(x) ** 2))(module)[1]


@pytest.mark.parametrize("optimizer_class", [Adam, AdamW, RMSprop])
def test_flat_steps_match_per_array_steps_and_restore_the_layout(optimizer_class):
    results = []
    for flat in (True, False):
        module, optimizer = _module_and_optimizer(optimizer_class)
        trainer = FlatTraining(module, optimizer) if flat else None
        for step in range(3):
            grads = _gradients(module)
            scale = mx.array(0.5 + 0.25 * step)
            if trainer is not None:
                trainer.update(as_vector(grads), scale)
            else:
                scaled_update(module, optimizer, grads, scale)
        if trainer is not None:
            trainer.finish()
        results.append((_arrays(module.parameters()), _arrays(optimizer.state)))
    _assert_same(results[0][0], results[1][0])
    _assert_same(results[0][1], results[1][1])
    assert int(results[0][1]["step"]) == 3
    # The module got views of the flat array in its own shapes, and the optimizer its own tree back
    module, optimizer = _module_and_optimizer(optimizer_class)
    trainer = FlatTraining(module, optimizer)
    trainer.update(as_vector(_gradients(module)))
    trainer.finish()
    assert module.layers[0].weight.shape == (5, 3) and module.layers[2].bias.shape == (2,)
    assert set(optimizer.state) == {"step", "learning_rate", "layers"}


def test_a_step_that_is_not_applied_keeps_parameters_and_state():
    module, optimizer = _module_and_optimizer(Adam)
    before = (_arrays(module.parameters()), _arrays(optimizer.state))
    trainer = FlatTraining(module, optimizer)
    trainer.update(as_vector(_gradients(module)), apply=mx.array(False))
    trainer.finish()
    _assert_same(_arrays(module.parameters()), before[0])
    _assert_same(_arrays(optimizer.state), before[1])
    trainer = FlatTraining(module, optimizer)
    trainer.update(as_vector(_gradients(module)), apply=mx.array(True))
    trainer.finish()
    assert not np.array_equal(np.array(module.layers[0].weight), before[0]["layers.0.weight"])
    assert int(optimizer.state["step"]) == 1


def test_only_elementwise_optimizers_on_float32_parameters_are_packed():
    module, optimizer = _module_and_optimizer(Adam)
    assert FlatTraining.supports(module, optimizer)

    # Only the listed classes: MLX's Adafactor and SGD are not, nor a subclass (its rule may not
    # be elementwise)
    class PerArrayAdam(Adam):
        pass

    for other in (
        optim.Adafactor(learning_rate=0.1),
        optim.SGD(learning_rate=0.1),
        PerArrayAdam(learning_rate=0.1),
    ):
        other.init(module.trainable_parameters())
        assert not FlatTraining.supports(module, other)
    # State not shaped as its parameter (factored, say)
    optimizer.state["layers"][0]["weight"]["m"] = mx.zeros((5,))
    assert not FlatTraining.supports(module, optimizer)
    uninitialised = Adam(learning_rate=0.1)
    assert not FlatTraining.supports(module, uninitialised)
    module.set_dtype(mx.float16)
    _, optimizer = _module_and_optimizer(Adam)
    assert not FlatTraining.supports(module, optimizer)


class _DigitKeysEnv(gym.Env):
    """Dict observations whose keys are digits, one of them an image (its CNN has parameters)."""

    observation_space = spaces.Dict(
        {"0": spaces.Box(0, 255, (36, 36, 1), np.uint8), "1": spaces.Box(-1.0, 1.0, (3,), np.float32)}
    )
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(action), bool(self.np_random.random() < 0.1), False, {}


def test_dict_observation_keys_made_of_digits_keep_their_layout(packed_calls):
    """The views go back into the module's own tree: a key "0" stays a dict key (rebuilt from dotted
    paths, it became a list index and the update failed)."""
    env = _DigitKeysEnv()
    env.observation_space.seed(0)
    model = PPO("MultiInputPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0)
    model.learn(16)
    assert packed_calls
    extractors = model.policy.features_extractor.extractors
    assert isinstance(extractors, dict) and set(extractors) == {"0", "1"}
    before = _arrays(model.policy.parameters())
    model.learn(16, reset_num_timesteps=False)  # still trains
    after = _arrays(model.policy.parameters())
    assert sorted(before) == sorted(after)
    assert any(not np.array_equal(before[key], after[key]) for key in before if ".0." in key)

"""MultiInputPolicy end to end: CombinedExtractor against its parts, Dict rollouts, PPO/A2C training,
save/load and identical predictions on Dict envs with image entries."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mlx.core as mx
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3 import A2C, PPO
from mlx_baselines3.common.envs import SimpleMultiObsEnv
from mlx_baselines3.common.layers import CombinedExtractor, FlattenExtractor, NatureCNN
from mlx_baselines3.common.policies import MultiInputActorCriticPolicy
from mlx_baselines3.common.rollout_buffer import DictRolloutBuffer
from mlx_baselines3.common.vec_env import VecTransposeImage, is_vecenv_wrapped


class ImageDictEnv(gym.Env):
    """Dict observations mixing a channel-first uint8 image, a vector, a Discrete and a MultiBinary entry.

    The rewarded action is the Discrete entry ``"cue"``; episodes last 8 steps.
    """

    observation_space: spaces.Dict

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "img": spaces.Box(0, 255, (1, 36, 36), np.uint8),
                "vec": spaces.Box(-1.0, 1.0, (3,), np.float32),
                "cue": spaces.Discrete(3),
                "bits": spaces.MultiBinary(2),
            }
        )
        self.action_space = spaces.Discrete(3)
        self.t = 0
        self._obs: dict[str, Any] = {}

    def _draw(self) -> dict[str, Any]:
        self._obs = {key: space.sample() for key, space in self.observation_space.spaces.items()}
        return self._obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        reward = float(int(action) == int(self._obs["cue"]))
        self.t += 1
        return self._draw(), reward, False, self.t >= 8, {}


def test_combined_extractor_concatenates_its_parts():
    space = ImageDictEnv().observation_space
    extractor = CombinedExtractor(space, cnn_output_dim=8)
    assert isinstance(extractor.extractors["img"], NatureCNN)
    assert all(isinstance(extractor.extractors[key], FlattenExtractor) for key in ("vec", "cue", "bits"))
    assert extractor.features_dim == 8 + 3 + 3 + 2  # the Discrete entry is one-hot

    policy = MultiInputActorCriticPolicy(
        space, spaces.Discrete(3), lambda _: 1e-3, features_extractor_kwargs=dict(cnn_output_dim=8)
    )
    obs = {
        "img": np.random.default_rng(0).integers(0, 256, (2, 1, 36, 36), dtype=np.uint8),
        "vec": np.array([[0.5, -0.5, 0.25], [0.0, 1.0, -1.0]], np.float32),
        "cue": np.array([2, 0]),
        "bits": np.array([[1, 0], [0, 1]], np.int8),
    }
    obs_tensor, vectorized = policy.obs_to_tensor(obs)
    assert vectorized
    features = np.array(policy.extract_features(obs_tensor, policy.features_extractor))
    assert features.shape == (2, 16)
    cnn = policy.features_extractor.extractors["img"]
    image_features = np.array(cnn(mx.array(obs["img"].astype(np.float32) / 255.0)))  # uint8 scaled to [0, 1]
    # gymnasium sorts Dict keys; the features follow that order
    assert list(policy.features_extractor.extractors) == ["bits", "cue", "img", "vec"]
    order = list(policy.features_extractor.extractors)
    expected_parts = {
        "img": image_features,
        "bits": obs["bits"].astype(np.float32),
        "cue": np.eye(3, dtype=np.float32)[obs["cue"]],
        "vec": obs["vec"],
    }
    np.testing.assert_allclose(
        features, np.concatenate([expected_parts[k] for k in order], axis=1), atol=1e-6
    )


def test_multi_input_policy_needs_a_dict_space_and_mlp_refuses_dicts():
    with pytest.raises(ValueError, match="MultiInputPolicy.*needs a Dict observation space"):
        PPO("MultiInputPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        A2C("MlpPolicy", ImageDictEnv())


def _predictions(model, obs):
    obs_tensor, _ = model.policy.obs_to_tensor(obs)
    probs = np.array(model.policy.get_distribution(obs_tensor).probs)
    values = np.array(model.policy.predict_values(obs_tensor))
    return probs, values


@pytest.mark.parametrize(
    "env_fn",
    [lambda: SimpleMultiObsEnv(random_start=True), ImageDictEnv],
    ids=["SimpleMultiObsEnv", "ImageDictEnv"],
)
@pytest.mark.parametrize("algo", [PPO, A2C])
def test_multi_input_policy_trains_saves_loads_and_predicts_identically(algo, env_fn, tmp_path):
    env = env_fn()
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1) if algo is PPO else dict(n_steps=8)
    model = algo("MultiInputPolicy", env, seed=0, **kwargs)
    assert isinstance(model.rollout_buffer, DictRolloutBuffer)
    assert model.rollout_buffer.observations["img"].dtype == np.uint8  # images stored compactly
    # SimpleMultiObsEnv's image entry is channel-last: the Dict is wrapped so the network sees (1, 64, 64)
    channel_last = isinstance(env, SimpleMultiObsEnv)
    assert is_vecenv_wrapped(model.get_env(), VecTransposeImage) == channel_last
    assert model.observation_space["img"].shape[0] == 1
    before = {k: np.array(v) for k, v in model.policy.state_dict().items()}
    model.learn(32)
    after = model.policy.state_dict()
    for name in (
        "features_extractor.extractors.img.cnn.layers.0.weight",
        "action_net.weight",
        "value_net.weight",
    ):
        assert not np.array_equal(before[name], np.array(after[name])), f"{name} was not trained"

    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip")
    assert isinstance(loaded.policy.features_extractor, CombinedExtractor)
    # A batch of observations in the env's own layout
    env.reset(seed=1)
    samples = [env.step(env.action_space.sample())[0] for _ in range(6)]
    obs = {key: np.stack([np.asarray(s[key]) for s in samples]) for key in samples[0]}
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (6,)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    for original, restored in zip(_predictions(model, obs), _predictions(loaded, obs)):
        np.testing.assert_array_equal(restored, original)
    single, _ = loaded.predict(samples[0], deterministic=True)
    assert single.shape == () and single == actions[0]
    with pytest.raises(ValueError, match="missing keys"):
        loaded.predict({"img": obs["img"]})

"""CnnPolicy end to end: NatureCNN against a NumPy convolution, image scaling, both image layouts,
training + save/load for PPO and A2C, custom features extractors and their (safe) loading."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gymnasium import spaces
from mlx.utils import tree_unflatten

from mlx_baselines3 import A2C, PPO
from mlx_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from mlx_baselines3.common.layers import BaseFeaturesExtractor, NatureCNN
from mlx_baselines3.common.policies import ActorCriticCnnPolicy
from mlx_baselines3.common.preprocessing import preprocess_obs
from mlx_baselines3.common.save_util import load_module_state as load_flat_state_dict
from mlx_baselines3.common.save_util import module_state_dict as flat_state_dict
from mlx_baselines3.common.serialization import PickleNotAllowedError, StateDictMismatchError
from mlx_baselines3.common.vec_env import VecTransposeImage, is_vecenv_wrapped

# 44 x 40 (not square, so a height/width mix-up shows): NatureCNN maps it to 2 x 1 x 64
HEIGHT, WIDTH, CHANNELS = 44, 40, 3


def _random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, HEIGHT, WIDTH, CHANNELS), dtype=np.uint8)


def _conv2d_nhwc(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Valid cross-correlation: x [B, H, W, C], weight [O, kh, kw, C] -> [B, H', W', O] (float64)."""
    _, kh, kw, _ = weight.shape
    windows = np.lib.stride_tricks.sliding_window_view(
        x, (kh, kw), axis=(1, 2)
    )  # [B, H-kh+1, W-kw+1, C, kh, kw]
    windows = windows[:, ::stride, ::stride]
    return np.einsum("bijckl,oklc->bijo", windows, weight) + bias


def _nature_cnn_reference(cnn: NatureCNN, images_hwc: np.ndarray) -> np.ndarray:
    """NatureCNN's forward pass in float64 NumPy from its own weights (features flattened as H, W, C)."""
    p = {name: np.array(value, dtype=np.float64) for name, value in flat_state_dict(cnn).items()}
    x = images_hwc.astype(np.float64)
    for index, stride in ((0, 4), (2, 2), (4, 1)):
        x = np.maximum(
            _conv2d_nhwc(x, p[f"cnn.layers.{index}.weight"], p[f"cnn.layers.{index}.bias"], stride), 0
        )
    flat = x.reshape(x.shape[0], -1)
    return np.maximum(flat @ p["linear.layers.0.weight"].T + p["linear.layers.0.bias"], 0)


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-zero weights and biases everywhere (biases start at zero otherwise)."""
    rng = np.random.default_rng(seed)
    module.update(
        tree_unflatten(
            [
                (name, mx.array(rng.normal(0, 0.1, size=value.shape).astype(np.float32)))
                for name, value in flat_state_dict(module).items()
            ]
        )
    )


def test_nature_cnn_convolves_like_a_numpy_reference():
    space = spaces.Box(0, 255, (HEIGHT, WIDTH, CHANNELS), np.uint8)
    cnn = NatureCNN(space, features_dim=16)
    _randomize(cnn, seed=0)
    images = _random_images(3).astype(np.float32) / 255.0
    features = np.array(cnn(mx.array(images)))
    assert features.shape == (3, 16)
    expected = _nature_cnn_reference(cnn, images)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert np.count_nonzero(expected) > 0  # the comparison is not all zeros after the ReLUs
    # The features depend on where the pixels are, not only on their values
    shifted = np.roll(images, 5, axis=2)
    assert not np.allclose(np.array(cnn(mx.array(shifted))), features, atol=1e-4)


def test_channel_first_and_channel_last_give_the_same_features():
    last = NatureCNN(spaces.Box(0, 255, (HEIGHT, WIDTH, CHANNELS), np.uint8), features_dim=16)
    first = NatureCNN(spaces.Box(0, 255, (CHANNELS, HEIGHT, WIDTH), np.uint8), features_dim=16)
    _randomize(last, seed=1)
    assert {k: v.shape for k, v in flat_state_dict(first).items()} == {
        k: v.shape for k, v in flat_state_dict(last).items()
    }
    load_flat_state_dict(first, flat_state_dict(last))
    images = _random_images(2, seed=3).astype(np.float32) / 255.0
    out_last = np.array(last(mx.array(images)))
    out_first = np.array(first(mx.array(images.transpose(0, 3, 1, 2))))
    np.testing.assert_allclose(out_first, out_last, rtol=1e-5, atol=1e-6)


def test_uint8_images_are_scaled_to_unit_range():
    space = spaces.Box(0, 255, (CHANNELS, HEIGHT, WIDTH), np.uint8)
    pixels = mx.array(
        np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1) * np.ones((1, 1, HEIGHT, WIDTH), np.uint8)
    )
    scaled = np.array(preprocess_obs(pixels, space))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0, :, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(
        np.array(preprocess_obs(pixels, space, normalize_images=False))[0, :, 0, 0], [0, 51, 255]
    )

    images = _random_images(2, seed=4).transpose(0, 3, 1, 2)
    for normalize in (True, False):
        policy = ActorCriticCnnPolicy(
            space,
            spaces.Discrete(3),
            lambda _: 1e-3,
            normalize_images=normalize,
            features_extractor_kwargs=dict(features_dim=16),
        )
        _randomize(policy.features_extractor, seed=5)
        features = np.array(policy.extract_features(mx.array(images), policy.features_extractor))
        expected_input = images.astype(np.float32) / (255.0 if normalize else 1.0)
        expected = _nature_cnn_reference(policy.features_extractor, expected_input.transpose(0, 2, 3, 1))
        np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_normalized_float_images_need_normalized_image_flag():
    space = spaces.Box(0.0, 1.0, (CHANNELS, HEIGHT, WIDTH), np.float32)
    with pytest.raises(ValueError, match="NatureCNN only with images"):
        NatureCNN(space)
    cnn = NatureCNN(space, features_dim=8, normalized_image=True)
    assert cnn(mx.zeros((1, CHANNELS, HEIGHT, WIDTH))).shape == (1, 8)


def test_nature_cnn_rejects_non_images_clearly():
    with pytest.raises(ValueError, match="NatureCNN only with images.*MlpPolicy"):
        NatureCNN(spaces.Box(-1, 1, (4,), np.float32))
    with pytest.raises(ValueError, match="image .*Box.*observation space, not Discrete"):
        NatureCNN(spaces.Discrete(3))
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        NatureCNN(SimpleMultiObsEnv().observation_space)
    with pytest.raises(ValueError, match=r"too small for NatureCNN"):
        NatureCNN(spaces.Box(0, 255, (20, 20, 1), np.uint8))
    with pytest.raises(ValueError, match="NatureCNN only with images"):
        PPO("CnnPolicy", "CartPole-v1")


def _probs_and_values(model, obs):
    obs_tensor, _ = model.policy.obs_to_tensor(obs)
    probs = np.array(model.policy.get_distribution(obs_tensor).probs)
    values = np.array(model.policy.predict_values(obs_tensor))
    return probs, values


@pytest.mark.parametrize("channel_first", [False, True], ids=["channel_last", "channel_first"])
@pytest.mark.parametrize("algo", [PPO, A2C])
def test_cnn_policy_trains_saves_loads_and_predicts_identically(algo, channel_first, tmp_path):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, channel_first=channel_first)
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1) if algo is PPO else dict(n_steps=8)
    model = algo("CnnPolicy", env, seed=0, **kwargs)
    # Images reach the network channel-first (SB3's convention): channel-last envs get a VecTransposeImage
    assert model.observation_space.shape == (1, 36, 36)
    assert is_vecenv_wrapped(model.get_env(), VecTransposeImage) == (not channel_first)
    assert isinstance(model.policy.features_extractor, NatureCNN)
    before = {k: np.array(v) for k, v in model.policy.state_dict().items()}
    model.learn(32)
    after = model.policy.state_dict()
    for name in ("features_extractor.cnn.layers.0.weight", "features_extractor.linear.layers.0.weight"):
        assert not np.array_equal(before[name], np.array(after[name])), f"{name} was not trained"

    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model")
    # A batch in the env's own layout (channel-last images are transposed by predict), and one image
    obs = np.stack([env.observation_space.sample() for _ in range(8)])
    actions, _ = model.predict(obs, deterministic=True)
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    assert actions.shape == (8,)
    np.testing.assert_array_equal(loaded_actions, actions)
    for original, restored in zip(_probs_and_values(model, obs), _probs_and_values(loaded, obs)):
        np.testing.assert_array_equal(restored, original)
    single, _ = loaded.predict(obs[0], deterministic=True)
    assert single.shape == () and single == actions[0]


class TinyConvExtractor(BaseFeaturesExtractor):
    """A user-defined extractor: one strided convolution and a linear layer (channel-first input)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 16, n_filters: int = 4) -> None:
        super().__init__(observation_space, features_dim)
        channels, height, width = observation_space.shape
        self.conv = nn.Conv2d(channels, n_filters, kernel_size=6, stride=6)
        self.linear = nn.Linear(n_filters * (height // 6) * (width // 6), features_dim)

    def __call__(self, observations: mx.array) -> mx.array:
        x = nn.relu(self.conv(observations.transpose(0, 2, 3, 1)))
        return nn.relu(self.linear(x.reshape(x.shape[0], -1)))


class OtherExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: spaces.Box, features_dim: int = 16, n_filters: int = 4) -> None:
        super().__init__(observation_space, features_dim)
        self.dense = nn.Linear(int(np.prod(observation_space.shape)), features_dim)

    def __call__(self, observations: mx.array) -> mx.array:
        return self.dense(observations.reshape(observations.shape[0], -1))


def test_custom_features_extractor_trains_and_loads_only_when_allowed(tmp_path):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)
    policy_kwargs = dict(
        features_extractor_class=TinyConvExtractor,
        features_extractor_kwargs=dict(features_dim=12, n_filters=3),
        net_arch=[32],
    )
    model = PPO("CnnPolicy", env, policy_kwargs=policy_kwargs, seed=0, n_steps=16, batch_size=16, n_epochs=1)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, TinyConvExtractor) and extractor.features_dim == 12
    assert extractor.conv.weight.shape == (3, 6, 6, 1)
    assert model.policy.mlp_extractor.latent_dim_pi == 32
    before = np.array(extractor.conv.weight)
    model.learn(16)
    assert not np.array_equal(before, np.array(model.policy.features_extractor.conv.weight))
    model.save(tmp_path / "custom.zip")
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    actions, _ = model.predict(obs, deterministic=True)

    # The user class cannot be re-imported safely by name: loading says how to provide it
    with pytest.raises(PickleNotAllowedError) as info:
        PPO.load(tmp_path / "custom.zip")
    message = str(info.value)
    assert "policy_kwargs.features_extractor_class" in message
    assert "custom_objects" in message and "allow_pickle=True" in message

    for load_kwargs in (
        dict(custom_objects={"policy_kwargs.features_extractor_class": TinyConvExtractor}),
        dict(allow_pickle=True),
    ):
        loaded = PPO.load(tmp_path / "custom.zip", **load_kwargs)
        assert isinstance(loaded.policy.features_extractor, TinyConvExtractor)
        # the extractor's kwargs were stored as plain JSON
        assert loaded.policy_kwargs["features_extractor_kwargs"] == dict(features_dim=12, n_filters=3)
        np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
        for original, restored in zip(_probs_and_values(model, obs), _probs_and_values(loaded, obs)):
            np.testing.assert_array_equal(restored, original)

    # A different class in its place does not half-load
    with pytest.raises(StateDictMismatchError, match="features_extractor"):
        PPO.load(
            tmp_path / "custom.zip", custom_objects={"policy_kwargs.features_extractor_class": OtherExtractor}
        )


def test_features_extractor_class_must_build_an_extractor():
    class NotAnExtractor(nn.Module):
        def __init__(self, observation_space, **kwargs):
            super().__init__()

    with pytest.raises(TypeError, match="BaseFeaturesExtractor"):
        PPO("CnnPolicy", FakeImageEnv(36, 36), policy_kwargs=dict(features_extractor_class=NotAnExtractor))

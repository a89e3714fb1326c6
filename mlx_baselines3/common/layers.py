"""Network building blocks: feature extractors and the policy/value MLP (SB3's ``torch_layers``).

MLX convolutions are channels-last (``[B, H, W, C]``). Image observations follow SB3's
convention (channel-first ``[C, H, W]``, which ``VecTransposeImage`` produces); ``NatureCNN``
accepts both layouts and transposes to channels-last internally.
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import mlx.core as mx
import mlx.nn as nn
from gymnasium import spaces

from mlx_baselines3.common.activations import Tanh, cpu_tanh_forward, on_cpu_backend
from mlx_baselines3.common.preprocessing import (
    get_flattened_obs_dim,
    is_image_space,
    is_image_space_channels_first,
)

_BIAS_ROWS_MIN_ELEMENTS = 16384
_BIAS_ROWS_MIN_WIDTH = 128
"""Outputs at least this large and this wide get their bias rows from a rank-1 product (:func:`_affine`)."""


def _affine(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """``x @ weight.T + bias`` with ``addmm``, which copies the bias into the output first.

    On MLX's CPU backend that copy reads the broadcast bias through a generic strided loop: for a
    256x256 output it cost more than a tenth of the product. For wide outputs (at least
    :data:`_BIAS_ROWS_MIN_WIDTH` columns and :data:`_BIAS_ROWS_MIN_ELEMENTS` values) the bias rows
    are made by the BLAS as the rank-1 product ``ones[B, 1] @ bias[1, N]`` (exact: each value is
    ``1 * b``), which ``addmm`` copies as one contiguous block. Measured: a 256x256x256 Linear+ReLU
    201 -> 175 us; DQN (batch 64, 256 units) +2.5% steps/s. Below that the extra operation costs more
    than it saves: PPO with batch 256 and 64 units lost 2-3% with it, and outputs of 8192 values or
    fewer gain nothing.
    """
    rows, width = x.shape[0], weight.shape[0]  # x is [B, in]: the fused functions see rows only
    if width >= _BIAS_ROWS_MIN_WIDTH and rows * width >= _BIAS_ROWS_MIN_ELEMENTS and on_cpu_backend():
        bias = mx.ones((rows, 1), dtype=bias.dtype) @ bias[None]
    return mx.addmm(bias, x, weight.T)


def _affine_grads(
    x: mx.array, weight: mx.array, pre_activation_grad: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    """Gradients of :func:`_affine` for ``(x, weight, bias)``, the weight's in its own ``[out, in]``
    layout: the generic rule gives the gradient of ``weight.T`` transposed back, a strided view that
    every later elementwise kernel (norm, Adam) then reads through MLX's slow strided path."""
    return pre_activation_grad @ weight, pre_activation_grad.T @ x, pre_activation_grad.sum(axis=0)


@mx.custom_function
def _linear(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    return _affine(x, weight, bias)


@_linear.vjp
def _linear_vjp(
    primals: tuple[mx.array, mx.array, mx.array], cotangent: mx.array, output: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    x, weight, _ = primals
    return _affine_grads(x, weight, cotangent)


def _on_rows(fn: Any, x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """``fn(x, weight, bias)`` for one of the fused layer functions, whose backward passes are
    written for a ``[B, in]`` batch: any other input (``[in]``, ``[B, T, in]``) goes through as rows
    and comes back in its own shape."""
    if x.ndim == 2:
        return cast(mx.array, fn(x, weight, bias))
    rows = cast(mx.array, fn(x.reshape(-1, x.shape[-1]), weight, bias))
    return rows.reshape(*x.shape[:-1], rows.shape[-1])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and function) whose backward pass produces the
    weight gradient directly in the weight's layout.

    Measured on MLX's CPU backend: a DQN gradient step (two 256x256 MLPs, batch 64, Adam) 0.87 ->
    0.77 ms, a SAC-sized one at batch 256 1.60 -> 1.49 ms; gradients equal to float32 rounding
    (``tests/test_layers.py``).
    """

    def __call__(self, x: mx.array) -> mx.array:
        if "bias" not in self:
            return super().__call__(x)
        return _on_rows(_linear, x, self["weight"], self["bias"])


@mx.custom_function
def _linear_tanh(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """``tanh(x @ weight.T + bias)`` as one differentiable function.

    ``addmm`` (the bias is copied into the product's output) followed by the fast tanh as one
    vectorised kernel; the gradient comes from the output. The bias is not added inside the tanh
    kernel: a broadcast input sends a fused kernel down MLX's scalar "strided" loop (measured:
    a 2x64 Tanh MLP's forward and backward 98 us with the bias in the kernel, 78 us with addmm).
    """
    return cpu_tanh_forward(_affine(x, weight, bias))


@_linear_tanh.vjp
def _linear_tanh_vjp(
    primals: tuple[mx.array, mx.array, mx.array], cotangent: mx.array, output: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    x, weight, _ = primals
    return _affine_grads(x, weight, cotangent * (1.0 - output * output))  # tanh' = 1 - tanh^2


@mx.custom_function
def _linear_relu(x: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """``relu(x @ weight.T + bias)`` as one differentiable function.

    MLX differentiates ``maximum(y, 0)`` into ``cotangent * (y > 0)``: a bool-to-float conversion
    that GCC does not vectorise, so MLX's CPU kernel for it runs one element at a time (a 256x256
    gradient 44 us against 14 us for ``where``). The gradient here selects with ``where``, from the
    output (``output > 0`` exactly where ``y > 0``), and gives the weight gradient in the weight's
    layout (as :class:`Linear`). The gradient is 0 where the pre-activation is <= 0, as PyTorch's,
    even for a non-finite incoming gradient (where the generic rule's ``inf * 0`` gives NaN).
    """
    return mx.maximum(_affine(x, weight, bias), 0.0)


@_linear_relu.vjp
def _linear_relu_vjp(
    primals: tuple[mx.array, mx.array, mx.array], cotangent: mx.array, output: mx.array
) -> tuple[mx.array, mx.array, mx.array]:
    x, weight, _ = primals
    return _affine_grads(x, weight, mx.where(output > 0.0, cotangent, 0.0))


_FUSED_ACTIVATIONS: dict[type, Any] = {Tanh: _linear_tanh, nn.ReLU: _linear_relu}


class Mlp(nn.Sequential):
    """``nn.Sequential`` of :func:`create_mlp` layers that runs each ``Linear`` followed by a (fast)
    Tanh or a ReLU as one fused step (:func:`_linear_tanh`, :func:`_linear_relu`). Same parameters
    and names as ``nn.Sequential`` (``layers.<i>.weight``), same function.

    Measured on MLX's CPU backend (``benchmarks/throughput.py``, alternating runs): PPO CartPole
    8.1k -> 8.55k steps/s, A2C 19.2k -> 20.4k (fewer graph nodes per step). A SAC gradient step
    (256x256 ReLU networks, batch 256) 6.9 -> 6.2 ms with the ReLU fused, 5.8 ms with the rank-1
    bias rows of :func:`_affine`; parameters after training are bit-identical.
    """

    def __call__(self, x: mx.array) -> mx.array:
        layers = self.layers
        index = 0
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            fused = _FUSED_ACTIVATIONS.get(type(following)) if type(layer) is Linear and "bias" in layer else None
            if fused is not None:
                x = _on_rows(fused, x, layer["weight"], layer["bias"])
                index += 2
            else:
                x = layer(x)
                index += 1
        return x


class BaseFeaturesExtractor(nn.Module):
    """Base class of feature extractors: subclass it, call ``super().__init__(observation_space,
    features_dim)`` and implement ``__call__(observations) -> [B, features_dim]``.

    :param observation_space: the observation space
    :param features_dim: number of features produced
    """

    def __init__(self, observation_space: gym.Space, features_dim: int = 0) -> None:
        super().__init__()
        assert features_dim > 0
        object.__setattr__(self, "_observation_space", observation_space)
        object.__setattr__(self, "_features_dim", int(features_dim))

    @property
    def features_dim(self) -> int:
        """Number of features produced."""
        return self._features_dim

    @property
    def observation_space(self) -> gym.Space:
        return self._observation_space

    def forward(self, observations: Any) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(observations)


class FlattenExtractor(BaseFeaturesExtractor):
    """Flatten the (preprocessed) observation: the default for vector observations."""

    def __init__(self, observation_space: gym.Space) -> None:
        super().__init__(observation_space, get_flattened_obs_dim(observation_space))

    def __call__(self, observations: mx.array) -> mx.array:
        return observations.reshape(observations.shape[0], -1)


class NatureCNN(BaseFeaturesExtractor):
    """The CNN of the DQN Nature paper (Mnih et al., 2015): three convolutions and a linear layer.

    :param observation_space: an image Box space, channel-first or channel-last
    :param features_dim: size of the final linear layer
    :param normalized_image: whether images are already scaled (skips the uint8 check)
    """

    def __init__(
        self, observation_space: gym.Space, features_dim: int = 512, normalized_image: bool = False
    ) -> None:
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(
                f"NatureCNN must be used with an image (gym.spaces.Box) observation space, not {observation_space}"
                " (use `MultiInputPolicy` for Dict observations, `MlpPolicy` for vectors)"
            )
        super().__init__(observation_space, features_dim)
        if not is_image_space(observation_space, check_channels=False, normalized_image=normalized_image):
            raise ValueError(
                "You should use NatureCNN only with images, not with "
                f"{observation_space} (you are probably using `CnnPolicy` instead of `MlpPolicy` or "
                "`MultiInputPolicy`). If you are using a custom environment, please check it using our env "
                "checker: from mlx_baselines3.common.env_checker import check_env. If you are using "
                "`VecNormalize` or already normalized channel-first images you should pass "
                "`normalize_images=False`."
            )
        shape = observation_space.shape
        channels_first = is_image_space_channels_first(observation_space)
        object.__setattr__(self, "_channels_first", channels_first)
        if channels_first:
            n_channels, height, width = shape
        else:
            height, width, n_channels = shape
        self.cnn = nn.Sequential(
            nn.Conv2d(n_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
        )
        out_h, out_w = height, width
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            out_h = (out_h - kernel) // stride + 1
            out_w = (out_w - kernel) // stride + 1
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"Image observations of shape {shape} are too small for NatureCNN (needs >= 36x36)")
        n_flatten = out_h * out_w * 64
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def __call__(self, observations: mx.array) -> mx.array:
        if self._channels_first:
            observations = observations.transpose(0, 2, 3, 1)
        features = self.cnn(observations)
        return self.linear(features.reshape(features.shape[0], -1))


def create_mlp(
    input_dim: int,
    output_dim: int,
    net_arch: list[int],
    activation_fn: type[nn.Module] = nn.ReLU,
    squash_output: bool = False,
    with_bias: bool = True,
) -> list[nn.Module]:
    """Layers of a fully connected network (``output_dim <= 0`` means no output layer)."""
    if activation_fn is nn.Tanh:
        # Same function, several times faster on MLX's CPU backend (see common/activations.py)
        activation_fn = Tanh
    modules: list[nn.Module] = []
    last_dim = input_dim
    for width in net_arch:
        modules.append(Linear(last_dim, width, bias=with_bias))
        modules.append(activation_fn())
        last_dim = width
    if output_dim > 0:
        modules.append(Linear(last_dim, output_dim, bias=with_bias))
    if squash_output:
        modules.append(nn.Tanh())
    return modules


class MlpExtractor(nn.Module):
    """The policy and value MLPs that follow the features extractor.

    ``net_arch`` is a list (same layers for both networks, not shared) or
    ``dict(pi=[...], vf=[...])``, as in SB3.

    :param feature_dim: dimension of the features
    :param net_arch: the architecture
    :param activation_fn: activation class (e.g. ``nn.Tanh``, ``nn.ReLU``)
    """

    def __init__(
        self,
        feature_dim: int,
        net_arch: list[int] | dict[str, list[int]],
        activation_fn: type[nn.Module],
        device: Any = "auto",
    ) -> None:
        super().__init__()
        if isinstance(net_arch, dict):
            pi_layers = list(net_arch.get("pi", []))
            vf_layers = list(net_arch.get("vf", []))
        elif isinstance(net_arch, (list, tuple)):
            pi_layers = vf_layers = list(net_arch)
        else:
            raise TypeError(f"net_arch must be a list or dict(pi=..., vf=...), got {net_arch!r}")
        for width in pi_layers + vf_layers:
            if not isinstance(width, int) or width <= 0:
                raise ValueError(f"net_arch entries must be positive ints, got {net_arch!r}")
        self.policy_net = Mlp(*create_mlp(feature_dim, -1, pi_layers, activation_fn))
        self.value_net = Mlp(*create_mlp(feature_dim, -1, vf_layers, activation_fn))
        object.__setattr__(self, "latent_dim_pi", pi_layers[-1] if pi_layers else feature_dim)
        object.__setattr__(self, "latent_dim_vf", vf_layers[-1] if vf_layers else feature_dim)

    def __call__(self, features: mx.array) -> tuple[mx.array, mx.array]:
        return self.policy_net(features), self.value_net(features)

    def forward(self, features: mx.array) -> tuple[mx.array, mx.array]:
        return self(features)

    def forward_actor(self, features: mx.array) -> mx.array:
        return self.policy_net(features)

    def forward_critic(self, features: mx.array) -> mx.array:
        return self.value_net(features)


class CombinedExtractor(BaseFeaturesExtractor):
    """Features for Dict observations: NatureCNN for image entries, flatten for the rest, concatenated.

    :param observation_space: a Dict space
    :param cnn_output_dim: features per image entry
    :param normalized_image: whether images are already scaled
    """

    def __init__(
        self, observation_space: spaces.Dict, cnn_output_dim: int = 256, normalized_image: bool = False
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(
                f"CombinedExtractor (`MultiInputPolicy`) needs a Dict observation space, not {observation_space}: "
                "use `MlpPolicy` for vectors or `CnnPolicy` for images"
            )
        super().__init__(observation_space, features_dim=1)
        extractors: dict[str, nn.Module] = {}
        total = 0
        for key, subspace in observation_space.spaces.items():
            if is_image_space(subspace, normalized_image=normalized_image):
                extractors[key] = NatureCNN(subspace, features_dim=cnn_output_dim, normalized_image=normalized_image)
                total += cnn_output_dim
            else:
                extractors[key] = FlattenExtractor(subspace)
                total += get_flattened_obs_dim(subspace)
        self.extractors = extractors
        object.__setattr__(self, "_features_dim", total)

    def __call__(self, observations: dict[str, mx.array]) -> mx.array:
        return mx.concatenate([extractor(observations[key]) for key, extractor in self.extractors.items()], axis=1)


def orthogonal_init(module: nn.Module, gain: float) -> None:
    """Orthogonal weights (scaled by ``gain``) and zero biases for every Linear/Conv2d in ``module``."""
    init = nn.init.orthogonal(gain=gain)

    def apply(_: str, layer: nn.Module) -> None:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            weight = layer.weight
            flat = weight.reshape(weight.shape[0], -1)
            layer.weight = init(flat).reshape(weight.shape)
            if "bias" in layer:
                layer.bias = mx.zeros_like(layer.bias)

    module.apply_to_modules(apply)

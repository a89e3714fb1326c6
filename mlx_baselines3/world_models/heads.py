"""Two-hot reward and value heads: an MLP trunk ending in ``K`` logits over a :class:`TwoHot`'s bins.

Output-layer initialisation
---------------------------
``output_init="zeros"`` (the default, as in DreamerV3): the last layer's weight and bias start
at exactly 0, so every logit is 0, the distribution is uniform and the prediction is exactly 0
(the :class:`TwoHot` expectation is exactly 0 for uniform probabilities with symmetric bins).
This avoids the huge first predictions a random output layer makes, above all with raw-space
bins. The price: on the first gradient step only the output layer receives a gradient — the
gradient to the trunk is ``W_out^T @ dlogits = 0`` — and the trunk starts learning once the
output layer has moved (from the second step on).

``output_init="normal"``: weights ``~ N(0, output_std^2)`` (bias 0); the trunk gets gradient from
the first step, and predictions start small but not exactly 0.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlx_baselines3.world_models._state import check_state_dict
from mlx_baselines3.world_models.twohot import TwoHot

OutputInit = Literal["zeros", "normal"]


class MLPTrunk(nn.Module):
    """``[Linear -> (RMSNorm) -> activation] * len(hidden_sizes)``.

    With ``norm=True`` the linear layers have no bias (the norm's scale follows them).

    :param in_dims: input feature size.
    :param hidden_sizes: widths of the hidden layers (may be empty: the trunk is the identity).
    :param activation_fn: activation class, instantiated once per layer (SB3 style, e.g. ``nn.SiLU``).
    :param norm: insert an ``nn.RMSNorm`` after every linear layer.
    """

    def __init__(
        self,
        in_dims: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation_fn: type[nn.Module] = nn.SiLU,
        norm: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int(in_dims, "in_dims")
        for width in hidden_sizes:
            _check_positive_int(width, "hidden_sizes entries")
        layers: list[nn.Module] = []
        last = int(in_dims)
        for width in hidden_sizes:
            layers.append(nn.Linear(last, int(width), bias=not norm))
            if norm:
                layers.append(nn.RMSNorm(int(width)))
            layers.append(activation_fn())
            last = int(width)
        self.layers = layers
        self.in_dims = int(in_dims)
        self.out_dims = last

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = layer(x)
        return x


class _StateDictMixin:
    """``state_dict`` / strict ``load_state_dict`` over an ``nn.Module``'s parameter tree."""

    def state_dict(self) -> dict[str, mx.array]:
        """Flat ``{dotted.name: array}`` of all parameters (the format of ``mx.save_safetensors``)."""
        return dict(tree_flatten(self.parameters()))  # type: ignore[attr-defined]

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Load parameters from a flat dict.

        :param state: ``{dotted.name: array}`` (``mx.array`` or numpy).
        :param strict: if True, missing or unexpected keys raise. Shapes are always checked.
        :raises ValueError: naming the missing / unexpected / mis-shaped keys; nothing is loaded then.
        """
        loaded = check_state_dict(type(self).__name__, self.state_dict(), state, strict=strict)
        self.update(tree_unflatten(list(loaded.items())))  # type: ignore[attr-defined]


class TwoHotHead(_StateDictMixin, nn.Module):
    """MLP trunk + a linear layer to ``K`` logits, decoded through a :class:`TwoHot`.

    :param in_dims: input feature size ``D``.
    :param hidden_sizes: trunk widths.
    :param activation_fn: activation class (default ``nn.SiLU``).
    :param norm: RMSNorm after each trunk layer.
    :param two_hot: the bins (default ``TwoHot()``: 255 bins over symlog ±20).
    :param output_init: ``"zeros"`` (default) or ``"normal"``; see the module docstring.
    :param output_std: standard deviation of the output weights when ``output_init="normal"``.
    """

    def __init__(
        self,
        in_dims: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation_fn: type[nn.Module] = nn.SiLU,
        norm: bool = True,
        two_hot: TwoHot | None = None,
        output_init: OutputInit = "zeros",
        output_std: float = 0.01,
    ) -> None:
        super().__init__()
        two_hot = TwoHot() if two_hot is None else two_hot
        if not isinstance(two_hot, TwoHot):
            raise ValueError(f"{type(self).__name__}: two_hot must be a TwoHot, got {type(two_hot)!r}")
        self.two_hot = two_hot  # plain object: its bins are not parameters
        self.trunk = MLPTrunk(in_dims, hidden_sizes, activation_fn, norm)
        self.out = nn.Linear(self.trunk.out_dims, two_hot.num_bins)
        self.out.update(init_output_layer(self.out.weight.shape, output_init, output_std))

    @property
    def in_dims(self) -> int:
        """Input feature size."""
        return self.trunk.in_dims

    def __call__(self, h: mx.array) -> mx.array:
        """Logits ``[..., K]`` for features ``h`` of shape ``[..., D]``."""
        _check_features(h, self.trunk.in_dims, type(self).__name__)
        return self.out(self.trunk(h))

    def predict(self, h: mx.array) -> mx.array:
        """Decoded prediction (raw scale), shape ``[...]``."""
        return self.two_hot.decode(self(h))

    def loss(self, h: mx.array, target: mx.array) -> mx.array:
        """Per-element two-hot cross-entropy against raw targets of shape ``[...]``."""
        return self.two_hot.loss(self(h), target)


class RewardHead(TwoHotHead):
    """Predicts the reward from features; two-hot over ``TwoHot`` bins. See :class:`TwoHotHead`."""


class ValueHead(TwoHotHead):
    """Predicts the (lambda-)return from features; two-hot over ``TwoHot`` bins. See :class:`TwoHotHead`.

    Pair it with :func:`~mlx_baselines3.world_models.ema.slow_copy` /
    :func:`~mlx_baselines3.world_models.ema.ema_update` for a slow critic.
    """


def init_output_layer(
    weight_shape: Sequence[int], output_init: OutputInit, output_std: float
) -> dict[str, mx.array]:
    """Initial ``{"weight", "bias"}`` of an output layer: all zeros, or ``N(0, output_std^2)`` weights."""
    shape = tuple(int(s) for s in weight_shape)
    bias_shape = shape[:-1]
    if output_init == "zeros":
        weight = mx.zeros(shape)
    elif output_init == "normal":
        if not output_std > 0:
            raise ValueError(f"output_std must be > 0 with output_init='normal', got {output_std!r}")
        weight = output_std * mx.random.normal(shape)
    else:
        raise ValueError(f"output_init must be 'zeros' or 'normal', got {output_init!r}")
    return {"weight": weight, "bias": mx.zeros(bias_shape)}


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_features(h: mx.array, in_dims: int, owner: str) -> None:
    if h.ndim == 0 or h.shape[-1] != in_dims:
        raise ValueError(f"{owner}: expected features with last axis {in_dims}, got shape {tuple(h.shape)}")

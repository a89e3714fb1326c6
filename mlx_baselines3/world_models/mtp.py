"""Multi-step (multi-token) prediction: one head predicting ``x[t + 1] .. x[t + L]`` from features at ``t``.

Convention
----------
For a sequence ``x`` of shape ``[B, T]`` and horizon ``L``, offset ``n`` (``n = 1..L``, stored at
index ``n - 1`` of the offset axis) at time ``t`` targets ``x[:, t + n]``: offset 1 is the next
element, offset ``L`` the element ``L`` steps later. Entries with ``t + n >= T`` run past the
end of the sequence: their target is filled with 0 and their mask is False.

If ``x[:, t]`` is the reward received on entering step ``t`` (Dreamer's alignment), offset ``n``
predicts the reward ``n`` steps after the features' step. If your data store the reward of
the transition ``t -> t + 1`` at index ``t``, shift it by one first (or read offset ``n`` as
predicting the reward of transition ``t + n - 1 -> t + n``).

The loss (:func:`mtp_loss`) is the sum over offsets of each offset's masked mean. An offset with
no valid entry (``T <= n``) contributes exactly 0 (never NaN), so sequences shorter than ``L``
still train the offsets they have data for, with the same weight as in long sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from mlx_baselines3.world_models.heads import (
    MLPTrunk,
    OutputInit,
    _check_features,
    _check_positive_int,
    _StateDictMixin,
    init_output_layer,
)
from mlx_baselines3.world_models.twohot import TwoHot


def mtp_targets(x: mx.array, horizon: int) -> tuple[mx.array, mx.array]:
    """Targets and validity mask for multi-step prediction (see the module docstring).

    :param x: ``[B, T]`` sequence (e.g. rewards).
    :param horizon: number of offsets ``L`` (>= 1).
    :return: ``(targets [B, T, L], mask [B, T, L])``: ``targets[:, t, n - 1] = x[:, t + n]`` where
        ``t + n < T`` (else 0); ``mask`` is a bool array, True where the target exists.
    """
    _check_positive_int(horizon, "horizon")
    if x.ndim != 2:
        raise ValueError(f"mtp_targets: x must have shape [B, T], got {tuple(x.shape)}")
    batch, steps = x.shape
    padded = mx.concatenate([x, mx.zeros((batch, horizon), dtype=x.dtype)], axis=1)
    targets = mx.stack([padded[:, n : n + steps] for n in range(1, horizon + 1)], axis=-1)
    t = mx.arange(steps)[:, None]
    n = mx.arange(1, horizon + 1)[None, :]
    mask = mx.broadcast_to((t + n < steps)[None], (batch, steps, horizon))
    return targets, mask


def mtp_loss_per_offset(logits: mx.array, targets: mx.array, mask: mx.array, two_hot: TwoHot) -> mx.array:
    """Masked mean two-hot loss of each offset, shape ``[L]``.

    :param logits: ``[B, T, L, K]``.
    :param targets: ``[B, T, L]`` raw targets (from :func:`mtp_targets`).
    :param mask: ``[B, T, L]``, bool or float weights; entries with mask 0 / False contribute no
        loss and receive no gradient (even if their loss were not finite).
    :return: ``[L]``; an offset without valid entries gives 0.
    """
    if logits.ndim != 4:
        raise ValueError(f"mtp_loss: logits must have shape [B, T, L, K], got {tuple(logits.shape)}")
    if tuple(targets.shape) != tuple(logits.shape[:3]) or tuple(mask.shape) != tuple(logits.shape[:3]):
        raise ValueError(
            f"mtp_loss: targets {tuple(targets.shape)} and mask {tuple(mask.shape)} must both have "
            f"shape {tuple(logits.shape[:3])} (logits {tuple(logits.shape)})"
        )
    weight = mask.astype(mx.float32)
    valid = weight > 0
    per_entry = two_hot.loss(logits, targets)
    per_entry = mx.where(valid, per_entry * weight, 0.0)
    total = mx.sum(per_entry, axis=(0, 1))
    count = mx.sum(mx.where(valid, weight, 0.0), axis=(0, 1))
    has_data = count > 0
    return mx.where(has_data, total / mx.where(has_data, count, 1.0), 0.0)


def mtp_loss(logits: mx.array, targets: mx.array, mask: mx.array, two_hot: TwoHot) -> mx.array:
    """Sum over offsets of each offset's masked mean two-hot loss (scalar, never NaN from empty offsets).

    See :func:`mtp_loss_per_offset` for the arguments.
    """
    return mx.sum(mtp_loss_per_offset(logits, targets, mask, two_hot))


class OffsetLinear(nn.Module):
    """``L`` independent linear output layers ``[..., H] -> [..., L, K]``, one per offset.

    The weights are stored as one ``[L, K, H]`` array (bias ``[L, K]``) and applied with a single
    matrix multiply; offset ``l`` only ever uses ``weight[l]`` and ``bias[l]``.
    """

    def __init__(
        self,
        in_dims: int,
        horizon: int,
        num_bins: int,
        output_init: OutputInit = "zeros",
        output_std: float = 0.01,
    ) -> None:
        super().__init__()
        init = init_output_layer((horizon, num_bins, in_dims), output_init, output_std)
        self.weight = init["weight"]
        self.bias = init["bias"]

    def __call__(self, x: mx.array) -> mx.array:
        horizon, num_bins, in_dims = self.weight.shape
        flat = x @ self.weight.reshape(horizon * num_bins, in_dims).T + self.bias.reshape(-1)
        return flat.reshape(*x.shape[:-1], horizon, num_bins)


class MTPHead(_StateDictMixin, nn.Module):
    """Multi-step two-hot prediction head: shared MLP trunk, one output layer per offset.

    :param in_dims: feature size ``D``.
    :param horizon: number of offsets ``L`` predicted from each step.
    :param hidden_sizes: trunk widths.
    :param activation_fn: activation class (default ``nn.SiLU``).
    :param norm: RMSNorm after each trunk layer.
    :param two_hot: the bins (default ``TwoHot()``).
    :param output_init: ``"zeros"`` (default) or ``"normal"``, as for :class:`RewardHead`.
    :param output_std: weight std when ``output_init="normal"``.
    """

    def __init__(
        self,
        in_dims: int,
        horizon: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation_fn: type[nn.Module] = nn.SiLU,
        norm: bool = True,
        two_hot: TwoHot | None = None,
        output_init: OutputInit = "zeros",
        output_std: float = 0.01,
    ) -> None:
        super().__init__()
        _check_positive_int(horizon, "horizon")
        two_hot = TwoHot() if two_hot is None else two_hot
        if not isinstance(two_hot, TwoHot):
            raise ValueError(f"MTPHead: two_hot must be a TwoHot, got {type(two_hot)!r}")
        self.two_hot = two_hot
        self.horizon = int(horizon)
        self.trunk = MLPTrunk(in_dims, hidden_sizes, activation_fn, norm)
        self.out = OffsetLinear(self.trunk.out_dims, self.horizon, two_hot.num_bins, output_init, output_std)

    def __call__(self, h: mx.array) -> mx.array:
        """Logits ``[B, T, L, K]`` for features ``[B, T, D]`` (any leading shape works)."""
        _check_features(h, self.trunk.in_dims, "MTPHead")
        return self.out(self.trunk(h))

    def predict(self, h: mx.array) -> mx.array:
        """Decoded predictions ``[B, T, L]``: entry ``[:, t, n - 1]`` predicts ``x[:, t + n]``."""
        return self.two_hot.decode(self(h))

    def loss(self, h: mx.array, x: mx.array) -> mx.array:
        """:func:`mtp_loss` of the predictions from ``h [B, T, D]`` for the sequence ``x [B, T]``."""
        targets, mask = mtp_targets(x, self.horizon)
        return mtp_loss(self(h), targets, mask, self.two_hot)

"""Dreamer-style world-model heads on MLX: symlog, two-hot bins, reward / value / multi-step heads,
loss and return normalisers, lambda-returns and slow (EMA) critics.

This package is independent of the rest of :mod:`mlx_baselines3`. See ``docs/world_models.md``.
"""

from mlx_baselines3.world_models.ema import ema_update, slow_copy
from mlx_baselines3.world_models.heads import MLPTrunk, RewardHead, TwoHotHead, ValueHead
from mlx_baselines3.world_models.mtp import MTPHead, OffsetLinear, mtp_loss, mtp_loss_per_offset, mtp_targets
from mlx_baselines3.world_models.normalizers import PercentileReturnNormalizer, RunningRMS
from mlx_baselines3.world_models.returns import lambda_returns
from mlx_baselines3.world_models.symlog import symexp, symlog
from mlx_baselines3.world_models.twohot import TwoHot
from mlx_baselines3.world_models.value_loss import twohot_value_loss, twohot_values

__all__ = [
    "MLPTrunk",
    "MTPHead",
    "OffsetLinear",
    "PercentileReturnNormalizer",
    "RewardHead",
    "RunningRMS",
    "TwoHot",
    "TwoHotHead",
    "ValueHead",
    "ema_update",
    "lambda_returns",
    "mtp_loss",
    "mtp_loss_per_offset",
    "mtp_targets",
    "slow_copy",
    "symexp",
    "symlog",
    "twohot_value_loss",
    "twohot_values",
]

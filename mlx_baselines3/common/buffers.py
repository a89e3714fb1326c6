"""SB3's import path for the rollout and replay buffers."""

from mlx_baselines3.common.replay_buffer import DictReplayBuffer, NStepReplayBuffer, ReplayBuffer
from mlx_baselines3.common.rollout_buffer import BaseBuffer, DictRolloutBuffer, RolloutBuffer, compute_gae

__all__ = [
    "BaseBuffer",
    "DictReplayBuffer",
    "DictRolloutBuffer",
    "NStepReplayBuffer",
    "ReplayBuffer",
    "RolloutBuffer",
    "compute_gae",
]

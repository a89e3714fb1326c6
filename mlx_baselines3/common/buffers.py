"""SB3's import path for the rollout and replay buffers."""

from mlx_baselines3.common.rollout_buffer import BaseBuffer, DictRolloutBuffer, RolloutBuffer, compute_gae

__all__ = ["BaseBuffer", "DictRolloutBuffer", "RolloutBuffer", "compute_gae"]

try:  # the replay buffers live in their own module
    from mlx_baselines3.common.replay_buffer import DictReplayBuffer, ReplayBuffer  # noqa: F401

    __all__ += ["DictReplayBuffer", "ReplayBuffer"]
except ImportError:  # pragma: no cover - while the module is being written
    pass

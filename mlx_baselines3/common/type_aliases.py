"""Common type aliases and sample containers (SB3's names)."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, SupportsFloat, Union

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    import mlx.core as mx

    from mlx_baselines3.common.callbacks import BaseCallback
    from mlx_baselines3.common.vec_env import VecEnv

GymEnv = Union[gym.Env, "VecEnv"]
GymObs = Union[tuple, dict[str, Any], np.ndarray, int]  # noqa: UP007
GymResetReturn = tuple[GymObs, dict]
AtariResetReturn = tuple[np.ndarray, dict[str, Any]]
GymStepReturn = tuple[GymObs, float, bool, bool, dict]
AtariStepReturn = tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]
ArrayDict = dict[str, np.ndarray]
MlxObs = Union["mx.array", dict[str, "mx.array"]]
# SB3 calls this TensorDict; kept for import compatibility.
TensorDict = dict[str, "mx.array"]
OptimizerStateDict = dict[str, Any]
MaybeCallback = Union[None, Callable, list["BaseCallback"], "BaseCallback"]
PyTorchObs = MlxObs


class Schedule(Protocol):
    """A function of ``progress_remaining`` (1 at the start of training, 0 at the end)."""

    def __call__(self, progress_remaining: float) -> float: ...


class RolloutBufferSamples(NamedTuple):
    observations: Any
    actions: Any
    old_values: Any
    old_log_prob: Any
    advantages: Any
    returns: Any


class DictRolloutBufferSamples(NamedTuple):
    observations: dict[str, Any]
    actions: Any
    old_values: Any
    old_log_prob: Any
    advantages: Any
    returns: Any


class ReplayBufferSamples(NamedTuple):
    observations: Any
    actions: Any
    next_observations: Any
    dones: Any
    rewards: Any
    # Discount factor per sample (gamma ** n for n-step returns); None means the algorithm's gamma.
    discounts: Any = None


class DictReplayBufferSamples(NamedTuple):
    observations: dict[str, Any]
    actions: Any
    next_observations: dict[str, Any]
    dones: Any
    rewards: Any
    discounts: Any = None


class RolloutReturn(NamedTuple):
    episode_timesteps: int
    n_episodes: int
    continue_training: bool


class TrainFrequencyUnit(Enum):
    STEP = "step"
    EPISODE = "episode"


class TrainFreq(NamedTuple):
    frequency: int
    unit: TrainFrequencyUnit


class PolicyPredictor(Protocol):
    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]: ...

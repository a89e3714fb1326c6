"""Rollout storage for on-policy algorithms, on preallocated NumPy arrays, with GAE."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import mlx.core as mx
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.preprocessing import get_action_dim, get_obs_shape
from mlx_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples


def _storage_dtype(space: spaces.Space) -> Any:
    """Keep uint8 images as uint8 (4x less memory); everything else is stored as float32."""
    if isinstance(space, spaces.Box) and space.dtype == np.uint8:
        return np.uint8
    return np.float32


def _map_observations(fn: Callable[[np.ndarray], Any], observations: Any) -> Any:
    """``fn`` applied to the observation array, or to each entry of a dict of them."""
    if isinstance(observations, dict):
        return {key: fn(value) for key, value in observations.items()}
    return fn(observations)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over ``[n_steps, n_envs]`` arrays.

    The carried advantage is reset wherever an episode ended: step ``t`` bootstraps from step
    ``t + 1`` only when ``episode_starts[t + 1]`` is 0 (for the last step: when ``dones`` is 0).
    Time-limit ends must already have ``gamma * V(terminal_observation)`` added to their reward.

    :return: ``(advantages, returns)`` with ``returns = advantages + values`` (TD(lambda) targets)
    """
    n_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    last_gae_lam = np.zeros(rewards.shape[1:], dtype=np.float32)
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal = 1.0 - dones.astype(np.float32)
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    return advantages, advantages + values


class BaseBuffer:
    """Shared sizing of rollout and replay storage.

    :param buffer_size: number of steps stored per env
    :param observation_space: observation space
    :param action_space: action space
    :param device: accepted for SB3 compatibility (storage is NumPy; MLX arrays are made on use)
    :param n_envs: number of parallel environments
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
    ) -> None:
        self.buffer_size = int(buffer_size)
        self.observation_space = observation_space
        self.action_space = action_space
        self.obs_shape = get_obs_shape(observation_space)
        self.action_dim = get_action_dim(action_space)
        self.pos = 0
        self.full = False
        # kept for SB3 compatibility only; stored as text so that buffers can be copied
        self.device = str(device) if isinstance(device, mx.Device) else device
        self.n_envs = int(n_envs)

    @staticmethod
    def swap_and_flatten(arr: np.ndarray) -> np.ndarray:
        """``[n_steps, n_envs, ...] -> [n_steps * n_envs, ...]`` (step-major, like SB3)."""
        shape = arr.shape
        if len(shape) < 3:
            shape = (*shape, 1)
        return arr.swapaxes(0, 1).reshape(shape[0] * shape[1], *shape[2:])

    def size(self) -> int:
        """Number of steps stored (per env)."""
        return self.buffer_size if self.full else self.pos

    def reset(self) -> None:
        self.pos = 0
        self.full = False

    def to_mlx(self, array: np.ndarray, copy: bool = True) -> mx.array:
        """A NumPy array as an MLX array (SB3's ``to_torch``)."""
        return mx.array(array)


class RolloutBuffer(BaseBuffer):
    """Rollout storage for PPO/A2C: observations, actions, rewards, values, log-probs, GAE.

    :param gae_lambda: GAE lambda (1 gives Monte-Carlo advantages)
    :param gamma: discount factor
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.gae_lambda = gae_lambda
        self.gamma = gamma
        self.generator_ready = False
        self.reset()

    def _new_observations(self, shape: tuple[int, int]) -> Any:
        """Zeroed observation storage ``[n_steps, n_envs, *obs_shape]`` (a dict of them for Dict spaces)."""
        assert isinstance(self.obs_shape, tuple)
        return np.zeros((*shape, *self.obs_shape), dtype=_storage_dtype(self.observation_space))

    def reset(self) -> None:
        shape = (self.buffer_size, self.n_envs)
        self.observations = self._new_observations(shape)
        self.actions = np.zeros((*shape, self.action_dim), dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.returns = np.zeros(shape, dtype=np.float32)
        self.episode_starts = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.advantages = np.zeros(shape, dtype=np.float32)
        self.generator_ready = False
        super().reset()

    def compute_returns_and_advantage(self, last_values: Any, dones: np.ndarray) -> None:
        """Fill ``advantages`` and ``returns`` with GAE (see :func:`compute_gae`).

        :param last_values: value estimates of the observations after the last step
        :param dones: whether the last step ended an episode, per env
        """
        last = np.asarray(last_values, dtype=np.float32).reshape(-1)
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.episode_starts, last, np.asarray(dones), self.gamma, self.gae_lambda
        )

    def _store_observation(self, obs: np.ndarray) -> None:
        if isinstance(self.observation_space, spaces.Discrete):
            obs = obs.reshape((self.n_envs, *self.obs_shape))  # type: ignore[misc]
        self.observations[self.pos] = np.asarray(obs)

    def add(
        self,
        obs: Any,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: Any,
        log_prob: Any,
    ) -> None:
        """Store one step of every env (``value`` ``[n_envs, 1]`` or ``[n_envs]``)."""
        if self.pos >= self.buffer_size:
            raise RuntimeError("RolloutBuffer is full: call reset() before adding more steps")
        self._store_observation(obs)
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.asarray(reward)
        self.episode_starts[self.pos] = np.asarray(episode_start)
        self.values[self.pos] = np.asarray(value, dtype=np.float32).reshape(-1)
        self.log_probs[self.pos] = np.asarray(log_prob, dtype=np.float32).reshape(-1)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    def flat_data(self) -> dict[str, Any]:
        """Every field flattened to ``[n_steps * n_envs, ...]`` (NumPy), ready to move to MLX once."""
        return {
            "observations": _map_observations(self.swap_and_flatten, self.observations),
            "actions": self.swap_and_flatten(self.actions),
            "old_values": self.swap_and_flatten(self.values).reshape(-1),
            "old_log_prob": self.swap_and_flatten(self.log_probs).reshape(-1),
            "advantages": self.swap_and_flatten(self.advantages).reshape(-1),
            "returns": self.swap_and_flatten(self.returns).reshape(-1),
        }

    def get(self, batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        """Minibatches in random order (the last one may be smaller), as MLX arrays."""
        assert self.full, "The rollout buffer must be full before sampling from it"
        data = self.flat_data()
        total = self.buffer_size * self.n_envs
        indices = np.random.permutation(total)
        batch_size = total if batch_size is None else batch_size
        for start in range(0, total, batch_size):
            yield self._get_samples(data, indices[start : start + batch_size])

    def _get_samples(self, data: dict[str, Any], batch_inds: np.ndarray) -> Any:
        samples_class = DictRolloutBufferSamples if isinstance(data["observations"], dict) else RolloutBufferSamples
        return samples_class(
            observations=_map_observations(lambda obs: mx.array(obs[batch_inds]), data["observations"]),
            actions=mx.array(data["actions"][batch_inds]),
            old_values=mx.array(data["old_values"][batch_inds]),
            old_log_prob=mx.array(data["old_log_prob"][batch_inds]),
            advantages=mx.array(data["advantages"][batch_inds]),
            returns=mx.array(data["returns"][batch_inds]),
        )


class DictRolloutBuffer(RolloutBuffer):
    """Rollout storage for Dict observation spaces."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: Any = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(f"DictRolloutBuffer needs a Dict observation space, got {observation_space}")
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs=n_envs)

    def _new_observations(self, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        assert isinstance(self.obs_shape, dict) and isinstance(self.observation_space, spaces.Dict)
        return {
            key: np.zeros((*shape, *obs_shape), dtype=_storage_dtype(self.observation_space.spaces[key]))
            for key, obs_shape in self.obs_shape.items()
        }

    def _store_observation(self, obs: dict[str, np.ndarray]) -> None:  # type: ignore[override]
        assert isinstance(self.obs_shape, dict) and isinstance(self.observation_space, spaces.Dict)
        for key, value in obs.items():
            value = np.asarray(value)
            if isinstance(self.observation_space.spaces[key], spaces.Discrete):
                value = value.reshape((self.n_envs, *self.obs_shape[key]))
            self.observations[key][self.pos] = value  # type: ignore[index,call-overload]

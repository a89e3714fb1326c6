"""Replay buffers for the off-policy algorithms (preallocated NumPy storage, SB3's semantics).

Storage is laid out ``(buffer_size // n_envs, n_envs, *shape)``: one row per call to ``add``,
one column per environment. Samples are returned as :class:`ReplayBufferSamples` of ``mx.array``
(as SB3 returns tensors); :meth:`ReplayBuffer.sample_numpy` gives the same batch as NumPy arrays.

Time-limit truncations are stored separately from terminations (``handle_timeout_termination``)
and the ``dones`` of a sample are ``dones * (1 - timeouts)``: an episode cut by a time limit is
bootstrapped from its last observation, as it should be.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.rollout_buffer import BaseBuffer
from mlx_baselines3.common.type_aliases import DictReplayBufferSamples, ReplayBufferSamples
from mlx_baselines3.common.utils import obs_as_mx

try:  # optional: only used to warn when the buffer would not fit in memory
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None

__all__ = ["ReplayBuffer", "NStepReplayBuffer", "DictReplayBuffer"]


def _cast_action_dtype(dtype: np.dtype) -> np.dtype:
    """float64 actions are stored as float32 (the networks work in float32)."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float64 else np.dtype(dtype)


class ReplayBuffer(BaseBuffer):
    """Replay buffer of transitions ``(obs, action, reward, next_obs, done)``.

    :param buffer_size: maximum number of transitions kept (across all envs)
    :param observation_space: observation space
    :param action_space: action space
    :param device: accepted for SB3 compatibility; MLX arrays live in unified memory
    :param n_envs: number of parallel environments (columns of the storage)
    :param optimize_memory_usage: store each observation once, reading ``next_obs`` of row ``i``
        from row ``i + 1`` (halves observation memory). Not compatible with
        ``handle_timeout_termination``.
    :param handle_timeout_termination: keep ``infos[i]["TimeLimit.truncated"]`` and do not treat a
        time-limit end as terminal when computing targets.
    """

    observations: np.ndarray
    next_observations: np.ndarray | None
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    timeouts: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        if int(buffer_size) < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if int(n_envs) < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if optimize_memory_usage and handle_timeout_termination:
            raise ValueError(
                "ReplayBuffer does not support optimize_memory_usage=True and "
                "handle_timeout_termination=True simultaneously: pass "
                "replay_buffer_kwargs=dict(handle_timeout_termination=False) to use optimize_memory_usage"
            )
        super().__init__(buffer_size, observation_space, action_space, device=device, n_envs=n_envs)
        # buffer_size counts transitions across envs; storage has one row per env step
        self.buffer_size = max(int(buffer_size) // self.n_envs, 1)
        self.optimize_memory_usage = optimize_memory_usage
        self.handle_timeout_termination = handle_timeout_termination
        self._allocate()

    # ------------------------------------------------------------------ storage

    def _allocate(self) -> None:
        assert isinstance(self.obs_shape, tuple)
        shape = (self.buffer_size, self.n_envs)
        obs_dtype = self.observation_space.dtype
        self.observations = np.zeros((*shape, *self.obs_shape), dtype=obs_dtype)
        self.next_observations = (
            None if self.optimize_memory_usage else np.zeros((*shape, *self.obs_shape), dtype=obs_dtype)
        )
        action_dtype = _cast_action_dtype(self.action_space.dtype)  # type: ignore[arg-type]
        self.actions = np.zeros((*shape, self.action_dim), dtype=action_dtype)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.dones = np.zeros(shape, dtype=np.float32)
        self.timeouts = np.zeros(shape, dtype=np.float32)
        self._check_memory()

    def _storage_arrays(self) -> list[np.ndarray]:
        arrays = [self.observations, self.actions, self.rewards, self.dones, self.timeouts]
        if self.next_observations is not None:
            arrays.append(self.next_observations)
        return arrays

    def _check_memory(self) -> None:
        if psutil is None:
            return
        total = sum(array.nbytes for array in self._storage_arrays())
        available = psutil.virtual_memory().available
        if total > available:
            warnings.warn(
                "This system does not have apparently enough memory to store the complete replay buffer "
                f"{total / 1e9:.2f}GB > {available / 1e9:.2f}GB",
                stacklevel=3,
            )

    # ------------------------------------------------------------------ add

    def _reshape_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        assert isinstance(self.obs_shape, tuple)
        if isinstance(self.observation_space, spaces.Discrete):
            # Discrete observations arrive as (n_envs,): store them as (n_envs, 1)
            obs = obs.reshape((self.n_envs, *self.obs_shape))
        return obs

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one transition per env (arrays with a leading ``n_envs`` axis).

        :param obs: observations the actions were taken in
        :param next_obs: observations reached (the ``terminal_observation`` where an episode ended)
        :param action: actions taken (scaled to [-1, 1] for Box spaces, as SB3 stores them)
        :param reward: rewards received
        :param done: whether each episode ended (by termination or time limit)
        :param infos: the step's infos; ``"TimeLimit.truncated"`` marks time-limit ends
        """
        if len(infos) != self.n_envs:
            raise ValueError(f"Expected infos for {self.n_envs} envs, got {len(infos)}")
        obs = self._reshape_obs(obs)
        next_obs = self._reshape_obs(next_obs)
        action = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.observations[self.pos] = obs
        if self.optimize_memory_usage:
            self.observations[(self.pos + 1) % self.buffer_size] = next_obs
        else:
            assert self.next_observations is not None
            self.next_observations[self.pos] = next_obs
        self.actions[self.pos] = action
        self.rewards[self.pos] = np.asarray(reward).reshape(self.n_envs)
        self.dones[self.pos] = np.asarray(done).reshape(self.n_envs)
        if self.handle_timeout_termination:
            self.timeouts[self.pos] = [info.get("TimeLimit.truncated", False) for info in infos]
        self._advance()

    def _advance(self) -> None:
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    # ------------------------------------------------------------------ sample

    def _sample_indices(self, batch_size: int) -> np.ndarray:
        if self.size() == 0:
            raise ValueError("Cannot sample from an empty replay buffer: add transitions first")
        if self.optimize_memory_usage and self.full:
            # Row self.pos holds the next observation of row self.pos - 1 but its own transition
            # has been overwritten: skip it.
            return (np.random.randint(1, self.buffer_size, size=batch_size) + self.pos) % self.buffer_size
        upper_bound = self.buffer_size if self.full else self.pos
        return np.random.randint(0, upper_bound, size=batch_size)

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        """Sample ``batch_size`` transitions uniformly (row and env drawn at random).

        :param batch_size: number of transitions
        :param env: a ``VecNormalize`` (or None) used to normalise observations and rewards
        :return: a ``ReplayBufferSamples`` of ``mx.array`` (rewards and dones of shape (batch, 1))
        """
        return self._as_mx(self.sample_numpy(batch_size, env=env))

    def sample_numpy(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        """Like :meth:`sample`, with NumPy arrays."""
        return self._get_samples(self._sample_indices(batch_size), env=env)

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> ReplayBufferSamples:
        env_indices = np.random.randint(0, self.n_envs, size=len(batch_inds))
        if self.optimize_memory_usage:
            next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices]
        else:
            assert self.next_observations is not None
            next_obs = self.next_observations[batch_inds, env_indices]
        dones = self.dones[batch_inds, env_indices] * (1.0 - self.timeouts[batch_inds, env_indices])
        return ReplayBufferSamples(
            observations=self._normalize_obs(self.observations[batch_inds, env_indices], env),
            actions=self.actions[batch_inds, env_indices],
            next_observations=self._normalize_obs(next_obs, env),
            dones=dones.reshape(-1, 1).astype(np.float32),
            rewards=self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )

    @staticmethod
    def _as_mx(samples: Any) -> Any:
        return type(samples)(*(None if item is None else obs_as_mx(item) for item in samples))

    to_torch = BaseBuffer.to_mlx

    @staticmethod
    def _normalize_obs(obs: Any, env: Any = None) -> Any:
        if env is not None:
            return env.normalize_obs(obs)
        return obs

    @staticmethod
    def _normalize_reward(reward: np.ndarray, env: Any = None) -> np.ndarray:
        if env is not None:
            return env.normalize_reward(reward).astype(np.float32)
        return reward

    # ------------------------------------------------------------------ save / load

    def _state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "dones": self.dones,
            "timeouts": self.timeouts,
        }
        if self.next_observations is not None:
            arrays["next_observations"] = self.next_observations
        return arrays

    def _saved_rows(self) -> int:
        # Rows in use; one more when not full because with optimize_memory_usage row ``pos``
        # holds the next observation of row ``pos - 1``.
        return self.buffer_size if self.full else min(self.pos + 1, self.buffer_size)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The rows in use as NumPy arrays plus JSON-able metadata (used by ``save_replay_buffer``)."""
        rows = self._saved_rows()
        meta = {
            "class": type(self).__name__,
            "buffer_size": self.buffer_size,
            "n_envs": self.n_envs,
            "pos": self.pos,
            "full": self.full,
            "rows": rows,
            "optimize_memory_usage": self.optimize_memory_usage,
            "handle_timeout_termination": self.handle_timeout_termination,
        }
        return {key: value[:rows] for key, value in self._state_arrays().items()}, meta

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned; raises ``ValueError`` naming any mismatch."""
        for key in ("buffer_size", "n_envs", "optimize_memory_usage"):
            if meta.get(key) != getattr(self, key):
                raise ValueError(
                    f"Saved replay buffer has {key}={meta.get(key)!r}, this buffer has {getattr(self, key)!r}"
                )
        expected = self._state_arrays()
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        if missing or unexpected:
            raise ValueError(f"Replay buffer arrays do not match: missing {missing}, unexpected {unexpected}")
        rows = int(meta.get("rows", self.buffer_size))
        if not 0 <= rows <= self.buffer_size:
            raise ValueError(f"Saved replay buffer has {rows} rows, more than buffer_size={self.buffer_size}")
        for key, target in expected.items():
            value = np.asarray(arrays[key])
            if value.shape != (rows, *target.shape[1:]):
                raise ValueError(
                    f"Replay buffer array {key!r} has shape {value.shape}, expected {(rows, *target.shape[1:])}"
                )
        for key, target in expected.items():
            target[:rows] = arrays[key]
            target[rows:] = 0
        self.pos = int(meta["pos"])
        self.full = bool(meta["full"])
        self.handle_timeout_termination = bool(meta.get("handle_timeout_termination", True))


class NStepReplayBuffer(ReplayBuffer):
    """Replay buffer returning n-step returns (SB3 2.7's ``NStepReplayBuffer``).

    A sample starting at step ``t`` carries ``rewards = sum_k gamma^k r_{t+k}`` over the ``n_steps``
    following transitions of the same env, stopped (inclusive) at the first termination or
    time-limit end; ``next_observations`` is the observation after the last step used, ``dones``
    is whether that step terminated (a time-limit end is bootstrapped) and ``discounts`` is
    ``gamma ** (number of steps used)``, to multiply the bootstrapped value with. The newest
    stored step is treated as an episode end so a sequence never runs into overwritten data.

    :param n_steps: number of steps summed
    :param gamma: discount factor
    """

    def __init__(self, *args: Any, n_steps: int = 3, gamma: float = 0.99, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if self.optimize_memory_usage:
            raise NotImplementedError("NStepReplayBuffer does not support optimize_memory_usage=True")
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> ReplayBufferSamples:
        assert self.next_observations is not None
        env_indices = np.random.randint(0, self.n_envs, size=len(batch_inds))
        offsets = np.arange(self.n_steps)
        rows = (batch_inds[:, None] + offsets[None, :]) % self.buffer_size  # (batch, n)
        cols = env_indices[:, None]
        dones_seq = self.dones[rows, cols] > 0
        timeouts_seq = self.timeouts[rows, cols] > 0
        # The newest row (pos - 1) is followed by stale or empty data: stop there.
        ends = dones_seq | timeouts_seq | (rows == (self.pos - 1) % self.buffer_size)
        first_end = np.where(ends.any(axis=1), ends.argmax(axis=1), self.n_steps - 1)
        used = offsets[None, :] <= first_end[:, None]  # (batch, n)
        rewards_seq = self._normalize_reward(self.rewards[rows, cols], env)
        step_discounts = (self.gamma**offsets).astype(np.float32)
        returns = (rewards_seq * step_discounts[None, :] * used).sum(axis=1, keepdims=True)
        last_rows = rows[np.arange(len(batch_inds)), first_end]
        last_dones = self.dones[last_rows, env_indices] * (1.0 - self.timeouts[last_rows, env_indices])
        discounts = (self.gamma ** (first_end + 1)).astype(np.float32).reshape(-1, 1)
        return ReplayBufferSamples(
            observations=self._normalize_obs(self.observations[batch_inds, env_indices], env),
            actions=self.actions[batch_inds, env_indices],
            next_observations=self._normalize_obs(self.next_observations[last_rows, env_indices], env),
            dones=last_dones.reshape(-1, 1).astype(np.float32),
            rewards=returns.astype(np.float32),
            discounts=discounts,
        )

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().get_state()
        meta.update(n_steps=self.n_steps, gamma=self.gamma)
        return arrays, meta


class DictReplayBuffer(ReplayBuffer):
    """Replay buffer for ``Dict`` observation spaces (one storage array per key).

    Same arguments as :class:`ReplayBuffer`; ``optimize_memory_usage`` is not supported.
    """

    observations: dict[str, np.ndarray]  # type: ignore[assignment]
    next_observations: dict[str, np.ndarray]  # type: ignore[assignment]

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(f"DictReplayBuffer needs a Dict observation space, got {observation_space}")
        if optimize_memory_usage:
            raise ValueError("DictReplayBuffer does not support optimize_memory_usage=True")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=handle_timeout_termination,
        )

    def _allocate(self) -> None:
        assert isinstance(self.obs_shape, dict)
        assert isinstance(self.observation_space, spaces.Dict)
        shape = (self.buffer_size, self.n_envs)
        self.observations = {
            key: np.zeros((*shape, *obs_shape), dtype=self.observation_space[key].dtype)
            for key, obs_shape in self.obs_shape.items()
        }
        self.next_observations = {key: np.zeros_like(value) for key, value in self.observations.items()}
        action_dtype = _cast_action_dtype(self.action_space.dtype)  # type: ignore[arg-type]
        self.actions = np.zeros((*shape, self.action_dim), dtype=action_dtype)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.dones = np.zeros(shape, dtype=np.float32)
        self.timeouts = np.zeros(shape, dtype=np.float32)
        self._check_memory()

    def _storage_arrays(self) -> list[np.ndarray]:
        return [
            *self.observations.values(),
            *self.next_observations.values(),
            self.actions,
            self.rewards,
            self.dones,
            self.timeouts,
        ]

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one transition per env; ``obs`` and ``next_obs`` are dicts of arrays."""
        if len(infos) != self.n_envs:
            raise ValueError(f"Expected infos for {self.n_envs} envs, got {len(infos)}")
        assert isinstance(self.observation_space, spaces.Dict) and isinstance(self.obs_shape, dict)
        for key in self.observations:
            value = np.asarray(obs[key])
            next_value = np.asarray(next_obs[key])
            if isinstance(self.observation_space.spaces[key], spaces.Discrete):
                value = value.reshape((self.n_envs, *self.obs_shape[key]))
                next_value = next_value.reshape((self.n_envs, *self.obs_shape[key]))
            self.observations[key][self.pos] = value
            self.next_observations[key][self.pos] = next_value
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.asarray(reward).reshape(self.n_envs)
        self.dones[self.pos] = np.asarray(done).reshape(self.n_envs)
        if self.handle_timeout_termination:
            self.timeouts[self.pos] = [info.get("TimeLimit.truncated", False) for info in infos]
        self._advance()

    def sample(self, batch_size: int, env: Any = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """Sample ``batch_size`` transitions; observations are dicts of ``mx.array``."""
        return self._as_mx(self.sample_numpy(batch_size, env=env))

    def sample_numpy(self, batch_size: int, env: Any = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """Like :meth:`sample`, with NumPy arrays."""
        return self._get_samples(self._sample_indices(batch_size), env=env)  # type: ignore[return-value]

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> DictReplayBufferSamples:  # type: ignore[override]
        env_indices = np.random.randint(0, self.n_envs, size=len(batch_inds))
        obs = self._normalize_obs({k: v[batch_inds, env_indices] for k, v in self.observations.items()}, env)
        next_obs = self._normalize_obs(
            {k: v[batch_inds, env_indices] for k, v in self.next_observations.items()}, env
        )
        dones = self.dones[batch_inds, env_indices] * (1.0 - self.timeouts[batch_inds, env_indices])
        return DictReplayBufferSamples(
            observations=obs,
            actions=self.actions[batch_inds, env_indices],
            next_observations=next_obs,
            dones=dones.reshape(-1, 1).astype(np.float32),
            rewards=self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )

    def _state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "actions": self.actions,
            "rewards": self.rewards,
            "dones": self.dones,
            "timeouts": self.timeouts,
        }
        for key, value in self.observations.items():
            arrays[f"observations.{key}"] = value
            arrays[f"next_observations.{key}"] = self.next_observations[key]
        return arrays

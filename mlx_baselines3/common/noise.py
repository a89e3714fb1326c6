"""Action noise for exploration with deterministic policies (TD3, DDPG); NumPy, SB3's API."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["ActionNoise", "NormalActionNoise", "OrnsteinUhlenbeckActionNoise", "VectorizedActionNoise"]


class ActionNoise(ABC):
    """Base class of action noises: calling the noise returns one sample."""

    def __init__(self) -> None:
        super().__init__()

    def reset(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Reset the noise at the end of an episode (no-op for memoryless noise)."""

    @abstractmethod
    def __call__(self) -> np.ndarray:
        raise NotImplementedError()


class NormalActionNoise(ActionNoise):
    """Gaussian noise ``N(mean, sigma)``.

    :param mean: mean of the noise (shape of the action)
    :param sigma: standard deviation of the noise (shape of the action)
    :param dtype: dtype of the samples
    """

    def __init__(self, mean: np.ndarray, sigma: np.ndarray, dtype: DTypeLike = np.float32) -> None:
        self._mu = np.asarray(mean)
        self._sigma = np.asarray(sigma)
        if np.any(self._sigma < 0):
            raise ValueError(f"sigma must be non-negative, got {sigma}")
        self._dtype = dtype
        super().__init__()

    def __call__(self) -> np.ndarray:
        return np.random.normal(self._mu, self._sigma).astype(self._dtype)

    def __repr__(self) -> str:
        return f"NormalActionNoise(mu={self._mu}, sigma={self._sigma})"


class OrnsteinUhlenbeckActionNoise(ActionNoise):
    """Ornstein-Uhlenbeck process, temporally correlated noise.

    ``x_{t+1} = x_t + theta * (mean - x_t) * dt + sigma * sqrt(dt) * N(0, 1)``

    :param mean: mean the process reverts to
    :param sigma: scale of the noise
    :param theta: rate of mean reversion
    :param dt: time step
    :param initial_noise: value of the process after ``reset`` (zeros when None)
    :param dtype: dtype of the samples
    """

    def __init__(
        self,
        mean: np.ndarray,
        sigma: np.ndarray,
        theta: float = 0.15,
        dt: float = 1e-2,
        initial_noise: np.ndarray | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        self._theta = theta
        self._mu = np.asarray(mean)
        self._sigma = np.asarray(sigma)
        self._dt = dt
        self._dtype = dtype
        self.initial_noise = initial_noise
        self.noise_prev = np.zeros_like(self._mu)
        self.reset()
        super().__init__()

    def __call__(self) -> np.ndarray:
        noise = (
            self.noise_prev
            + self._theta * (self._mu - self.noise_prev) * self._dt
            + self._sigma * np.sqrt(self._dt) * np.random.normal(size=self._mu.shape)
        )
        self.noise_prev = noise
        return noise.astype(self._dtype)

    def reset(self) -> None:
        """Restart the process from ``initial_noise`` (or zeros)."""
        self.noise_prev = self.initial_noise if self.initial_noise is not None else np.zeros_like(self._mu)

    def __repr__(self) -> str:
        return f"OrnsteinUhlenbeckActionNoise(mu={self._mu}, sigma={self._sigma})"


class VectorizedActionNoise(ActionNoise):
    """One independent copy of a base noise per environment.

    :param base_noise: the noise to copy
    :param n_envs: number of environments
    """

    def __init__(self, base_noise: ActionNoise, n_envs: int) -> None:
        try:
            self.n_envs = int(n_envs)
            assert self.n_envs > 0
        except (TypeError, AssertionError) as e:
            raise ValueError(f"Expected n_envs={n_envs} to be a positive integer greater than 0") from e
        self.base_noise = base_noise
        self.noises = [copy.deepcopy(self.base_noise) for _ in range(self.n_envs)]

    def reset(self, indices: Iterable[int] | None = None) -> None:  # type: ignore[override]
        """Reset the noises of the given envs (all of them when ``indices`` is None)."""
        if indices is None:
            indices = range(len(self.noises))
        for index in indices:
            self.noises[index].reset()

    def __repr__(self) -> str:
        return f"VecNoise(BaseNoise={self.base_noise!r}), n_envs={len(self.noises)})"

    def __call__(self) -> np.ndarray:
        """One sample per env, stacked: shape ``(n_envs, *action_shape)``."""
        return np.stack([noise() for noise in self.noises])

    @property
    def base_noise(self) -> ActionNoise:
        return self._base_noise

    @base_noise.setter
    def base_noise(self, base_noise: ActionNoise) -> None:
        if base_noise is None:
            raise ValueError("Expected base_noise to be an instance of ActionNoise, not None", ActionNoise)
        if not isinstance(base_noise, ActionNoise):
            raise TypeError("Expected base_noise to be an instance of type ActionNoise", ActionNoise)
        self._base_noise = base_noise

    @property
    def noises(self) -> list[ActionNoise]:
        return self._noises

    @noises.setter
    def noises(self, noises: list[ActionNoise]) -> None:
        noises = list(noises)
        if len(noises) != self.n_envs:
            raise ValueError(f"Expected a list of {self.n_envs} ActionNoises, found {len(noises)}.")
        different_types = [
            i for i, noise in enumerate(noises) if not isinstance(noise, type(self.base_noise))
        ]
        if len(different_types):
            raise ValueError(
                f"Noise instances at indices {different_types} don't match the type of base_noise",
                type(self.base_noise),
            )
        self._noises = noises
        for noise in noises:
            noise.reset()

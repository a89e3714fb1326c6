"""Identity environments: the reward is 1 when the action equals (or is near) the observation."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

T = TypeVar("T", int, np.ndarray)


class IdentityEnv(gym.Env, Generic[T]):
    """Observe a random element of ``space``; reward 1 for repeating it as the action.

    Episodes are truncated after ``ep_length`` steps (never terminated).

    :param dim: size of the Discrete space (used when ``space`` is None; default 1)
    :param space: the observation and action space
    :param ep_length: episode length
    """

    def __init__(self, dim: int | None = None, space: spaces.Space | None = None, ep_length: int = 100):
        if space is None:
            if dim is None:
                dim = 1
            space = spaces.Discrete(dim)
        elif dim is not None:
            raise ValueError("arguments for both 'dim' and 'space' provided: at most one allowed")
        self.observation_space = self.action_space = space
        self.ep_length = ep_length
        self.current_step = 0
        self.num_resets = -1  # becomes 0 after __init__
        self.state: Any = None
        self.reset()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[T, dict[str, Any]]:
        if seed is not None:
            super().reset(seed=seed)
            # The states are drawn from the space, so seed it too (reproducible episodes)
            self.action_space.seed(seed)
        self.current_step = 0
        self.num_resets += 1
        self._choose_next_state()
        return self.state, {}

    def step(self, action: T) -> tuple[T, float, bool, bool, dict[str, Any]]:
        reward = self._get_reward(action)
        self._choose_next_state()
        self.current_step += 1
        terminated = False
        truncated = self.current_step >= self.ep_length
        return self.state, reward, terminated, truncated, {}

    def _choose_next_state(self) -> None:
        self.state = self.action_space.sample()

    def _get_reward(self, action: T) -> float:
        return 1.0 if np.all(self.state == action) else 0.0

    def render(self) -> None:
        pass


class IdentityEnvBox(IdentityEnv[np.ndarray]):
    """Identity env with a 1-D Box space: reward 1 when ``|action - state| <= eps``.

    :param low: lower bound
    :param high: upper bound
    :param eps: tolerance
    :param ep_length: episode length
    """

    def __init__(self, low: float = -1.0, high: float = 1.0, eps: float = 0.05, ep_length: int = 100):
        space = spaces.Box(low=low, high=high, shape=(1,), dtype=np.float32)
        super().__init__(ep_length=ep_length, space=space)
        self.eps = eps

    def _get_reward(self, action: np.ndarray) -> float:
        return 1.0 if np.all((self.state - self.eps <= action) & (action <= self.state + self.eps)) else 0.0


class IdentityEnvMultiDiscrete(IdentityEnv[np.ndarray]):
    """Identity env with a ``MultiDiscrete([dim, dim])`` space.

    :param dim: number of values of each of the two components
    :param ep_length: episode length
    """

    def __init__(self, dim: int = 1, ep_length: int = 100):
        super().__init__(space=spaces.MultiDiscrete([dim, dim]), ep_length=ep_length)


class IdentityEnvMultiBinary(IdentityEnv[np.ndarray]):
    """Identity env with a ``MultiBinary(dim)`` space.

    :param dim: number of bits
    :param ep_length: episode length
    """

    def __init__(self, dim: int = 1, ep_length: int = 100):
        super().__init__(space=spaces.MultiBinary(dim), ep_length=ep_length)


class FakeImageEnv(gym.Env):
    """Random uint8 images as observations, zero reward, episodes of 10 steps.

    :param action_dim: number of discrete actions
    :param screen_height: image height
    :param screen_width: image width
    :param n_channels: number of channels
    :param discrete: Discrete actions (True) or a Box of shape (5,) (False)
    :param channel_first: images are (C, H, W) instead of (H, W, C)
    """

    def __init__(
        self,
        action_dim: int = 6,
        screen_height: int = 84,
        screen_width: int = 84,
        n_channels: int = 1,
        discrete: bool = True,
        channel_first: bool = False,
    ):
        self.observation_shape: tuple[int, ...] = (screen_height, screen_width, n_channels)
        if channel_first:
            self.observation_shape = (n_channels, screen_height, screen_width)
        self.observation_space = spaces.Box(low=0, high=255, shape=self.observation_shape, dtype=np.uint8)
        self.action_space: spaces.Space
        if discrete:
            self.action_space = spaces.Discrete(action_dim)
        else:
            self.action_space = spaces.Box(low=-1, high=1, shape=(5,), dtype=np.float32)
        self.ep_length = 10
        self.current_step = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            super().reset(seed=seed)
            self.observation_space.seed(seed)
        self.current_step = 0
        return self.observation_space.sample(), {}

    def step(self, action: int | np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = 0.0
        self.current_step += 1
        terminated = False
        truncated = self.current_step >= self.ep_length
        return self.observation_space.sample(), reward, terminated, truncated, {}

    def render(self) -> None:
        pass

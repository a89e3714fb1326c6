"""BitFlippingEnv: the goal-conditioned toy task of the HER paper."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec


class BitFlippingEnv(gym.Env):
    """Flip bits until the state equals the goal (all ones).

    The observation is a Dict with ``observation``, ``achieved_goal`` (both the current
    bits) and ``desired_goal``. The reward is 0 when the goal is reached (the episode then
    terminates) and -1 otherwise; episodes are truncated after ``max_steps`` steps.

    :param n_bits: number of bits
    :param continuous: Box actions in [-1, 1]^n (bit i flips where action i > 0) instead of
        Discrete(n) (flip one bit)
    :param max_steps: episode length limit (default: ``n_bits``)
    :param discrete_obs_space: show the bits as one integer (Discrete(2**n_bits)), bit i being
        worth 2**i
    :param image_obs_space: show the bits as a uint8 image (1x36x36 or 36x36x1), 255 where a
        bit is set, zero padding after the ``n_bits`` first pixels
    :param channel_first: image layout (with ``image_obs_space``)
    :param render_mode: ``"human"`` (print) or ``"rgb_array"`` (return the bits)
    """

    spec = EnvSpec("BitFlippingEnv-v0", "no-entry-point")
    state: np.ndarray

    def __init__(
        self,
        n_bits: int = 10,
        continuous: bool = False,
        max_steps: int | None = None,
        discrete_obs_space: bool = False,
        image_obs_space: bool = False,
        channel_first: bool = True,
        render_mode: str = "human",
    ):
        super().__init__()
        if discrete_obs_space and image_obs_space:
            raise ValueError("discrete_obs_space and image_obs_space cannot both be True")
        self.render_mode = render_mode
        self.image_shape = (1, 36, 36) if channel_first else (36, 36, 1)
        if image_obs_space and n_bits > 36 * 36:
            raise ValueError(f"image_obs_space supports at most {36 * 36} bits, got {n_bits}")
        self.n_bits = n_bits
        self.observation_space = self._make_observation_space(discrete_obs_space, image_obs_space, n_bits)
        # Space of the internal state (the bits)
        self._obs_space = spaces.MultiBinary(n_bits)
        self.action_space: spaces.Space
        if continuous:
            self.action_space = spaces.Box(-1, 1, shape=(n_bits,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(n_bits)
        self.continuous = continuous
        self.discrete_obs_space = discrete_obs_space
        self.image_obs_space = image_obs_space
        self.desired_goal = np.ones((n_bits,), dtype=np.int8)
        if max_steps is None:
            max_steps = n_bits
        self.max_steps = max_steps
        self.current_step = 0

    def seed(self, seed: int) -> None:
        """Seed the draw of the initial bits."""
        self._obs_space.seed(seed)

    def convert_if_needed(self, state: np.ndarray) -> int | np.ndarray:
        """Convert the internal bit vector to the observation format.

        :param state: a bit vector
        :return: an int, an image or the bit vector
        """
        if self.discrete_obs_space:
            return int(sum(int(state[i]) * 2**i for i in range(len(state))))
        if self.image_obs_space:
            size = int(np.prod(self.image_shape))
            image = np.concatenate(
                (state.astype(np.uint8) * 255, np.zeros(size - len(state), dtype=np.uint8))
            )
            return image.reshape(self.image_shape).astype(np.uint8)
        return state

    def convert_to_bit_vector(self, state: int | np.ndarray, batch_size: int) -> np.ndarray:
        """Convert observations (one or a batch, any format) back to bit vectors.

        :param state: an int / array of ints, image(s) or bit vector(s)
        :param batch_size: number of observations in ``state``
        :return: bit vectors of shape (batch_size, n_bits)
        """
        if self.discrete_obs_space:
            integers = np.asarray(state, dtype=np.int64).reshape(batch_size, 1)
            return ((integers & (1 << np.arange(self.n_bits))) > 0).astype(np.int64)
        if self.image_obs_space:
            return np.asarray(state).reshape(batch_size, -1)[:, : self.n_bits] / 255
        return np.asarray(state).reshape(batch_size, -1)

    def _make_observation_space(
        self, discrete_obs_space: bool, image_obs_space: bool, n_bits: int
    ) -> spaces.Dict:
        if discrete_obs_space:
            return spaces.Dict(
                {
                    "observation": spaces.Discrete(2**n_bits),
                    "achieved_goal": spaces.Discrete(2**n_bits),
                    "desired_goal": spaces.Discrete(2**n_bits),
                }
            )
        if image_obs_space:
            return spaces.Dict(
                {
                    "observation": spaces.Box(0, 255, self.image_shape, np.uint8),
                    "achieved_goal": spaces.Box(0, 255, self.image_shape, np.uint8),
                    "desired_goal": spaces.Box(0, 255, self.image_shape, np.uint8),
                }
            )
        return spaces.Dict(
            {
                "observation": spaces.MultiBinary(n_bits),
                "achieved_goal": spaces.MultiBinary(n_bits),
                "desired_goal": spaces.MultiBinary(n_bits),
            }
        )

    def _get_obs(self) -> dict[str, int | np.ndarray]:
        return OrderedDict(
            [
                ("observation", self.convert_if_needed(self.state.copy())),
                ("achieved_goal", self.convert_if_needed(self.state.copy())),
                ("desired_goal", self.convert_if_needed(self.desired_goal.copy())),
            ]
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, int | np.ndarray], dict[str, Any]]:
        if seed is not None:
            super().reset(seed=seed)
            self._obs_space.seed(seed)
        self.current_step = 0
        self.state = self._obs_space.sample()
        return self._get_obs(), {}

    def step(
        self, action: int | np.ndarray
    ) -> tuple[dict[str, int | np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.continuous:
            flip = np.asarray(action) > 0
            self.state[flip] = 1 - self.state[flip]
        else:
            self.state[action] = 1 - self.state[action]
        obs = self._get_obs()
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], None).item())
        terminated = reward == 0
        self.current_step += 1
        info = {"is_success": terminated}
        truncated = self.current_step >= self.max_steps
        return obs, reward, terminated, truncated, info

    def compute_reward(
        self, achieved_goal: int | np.ndarray, desired_goal: int | np.ndarray, _info: Any
    ) -> np.ndarray:
        """Vectorised reward: 0 where the achieved goal equals the desired goal, else -1.

        :param achieved_goal: one goal or a batch of goals (any observation format)
        :param desired_goal: same shape as ``achieved_goal``
        :param _info: unused
        :return: float32 rewards, one per goal
        """
        if isinstance(achieved_goal, (int, np.integer)):
            batch_size = 1
        elif self.discrete_obs_space:
            batch_size = int(np.asarray(achieved_goal).size)
        elif self.image_obs_space:
            batch_size = achieved_goal.shape[0] if len(achieved_goal.shape) > 3 else 1
        else:
            batch_size = achieved_goal.shape[0] if len(achieved_goal.shape) > 1 else 1
        desired = self.convert_to_bit_vector(desired_goal, batch_size)
        achieved = self.convert_to_bit_vector(achieved_goal, batch_size)
        distance = np.linalg.norm(achieved - desired, axis=-1)
        return -(distance > 0).astype(np.float32)

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode == "rgb_array":
            return self.state.copy()
        print(self.state)
        return None

    def close(self) -> None:
        pass

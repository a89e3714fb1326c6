"""SimpleMultiObsEnv: a 4x4 grid world with Dict observations (a vector and an image)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SimpleMultiObsEnv(gym.Env):
    """A grid world whose observation is ``{"vec": column vector, "img": row image}``.

    ::

         ____________
        | 0  1  2   3|
        | 4|¯5¯¯6¯| 7|
        | 8|_9_10_|11|
        |12 13  14 15|
        ¯¯¯¯¯¯¯¯¯¯¯¯¯¯

    States 5, 6, 9 and 10 are blocked; the goal is 15 (reward 1, episode ends), every other
    step costs 0.1. Actions: 0 left, 1 down, 2 right, 3 up. Each column is shown by a random
    vector and each row by a random 64x64 image (drawn from NumPy's global generator at
    construction, as in SB3). Episodes are truncated after 100 steps.

    :param num_col: number of columns
    :param num_row: number of rows
    :param random_start: start in a random state (else state 0)
    :param discrete_actions: Discrete(4) actions (else a Box of 4 scores; the argmax is taken)
    :param channel_last: images are (64, 64, 1) (else (1, 64, 64))
    """

    def __init__(
        self,
        num_col: int = 4,
        num_row: int = 4,
        random_start: bool = True,
        discrete_actions: bool = True,
        channel_last: bool = True,
    ):
        super().__init__()
        self.vector_size = 5
        self.img_size = [64, 64, 1] if channel_last else [1, 64, 64]
        self.random_start = random_start
        self.discrete_actions = discrete_actions
        self.action_space: spaces.Space
        if discrete_actions:
            self.action_space = spaces.Discrete(4)
        else:
            self.action_space = spaces.Box(0, 1, (4,))
        self.observation_space = spaces.Dict(
            spaces={
                "vec": spaces.Box(0, 1, (self.vector_size,), dtype=np.float64),
                "img": spaces.Box(0, 255, self.img_size, dtype=np.uint8),
            }
        )
        self.count = 0
        self.max_count = 100
        self.log = ""
        self.state = 0
        self.action2str = ["left", "down", "right", "up"]
        self.init_possible_transitions()
        self.num_col = num_col
        self.state_mapping: list[dict[str, np.ndarray]] = []
        self.init_state_mapping(num_col, num_row)
        self.max_state = len(self.state_mapping) - 1

    def init_state_mapping(self, num_col: int, num_row: int) -> None:
        """Draw the vector of each column and the image of each row."""
        col_vecs = np.random.random((num_col, self.vector_size))
        row_imgs = np.random.randint(0, 255, (num_row, 64, 64), dtype=np.uint8)
        # State index = row * num_col + col
        for row in range(num_row):
            for col in range(num_col):
                self.state_mapping.append({"vec": col_vecs[col], "img": row_imgs[row].reshape(self.img_size)})

    def get_state_mapping(self) -> dict[str, np.ndarray]:
        """The observation of the current state."""
        return self.state_mapping[self.state]

    def init_possible_transitions(self) -> None:
        """States from which each move is allowed (walls elsewhere)."""
        self.left_possible = [1, 2, 3, 13, 14, 15]
        self.down_possible = [0, 4, 8, 3, 7, 11]
        self.right_possible = [0, 1, 2, 12, 13, 14]
        self.up_possible = [4, 8, 12, 7, 11, 15]

    def step(
        self, action: int | np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self.discrete_actions:
            action = int(np.argmax(action))
        action = int(action)
        self.count += 1
        prev_state = self.state
        reward = -0.1
        if self.state in self.left_possible and action == 0:
            self.state -= 1
        elif self.state in self.down_possible and action == 1:
            self.state += self.num_col
        elif self.state in self.right_possible and action == 2:
            self.state += 1
        elif self.state in self.up_possible and action == 3:
            self.state -= self.num_col
        got_to_end = self.state == self.max_state
        reward = 1.0 if got_to_end else reward
        truncated = self.count > self.max_count
        terminated = got_to_end
        self.log = f"Went {self.action2str[action]} in state {prev_state}, got to state {self.state}"
        return self.get_state_mapping(), reward, terminated, truncated, {"got_to_end": got_to_end}

    def render(self) -> None:
        print(self.log)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.count = 0
        if not self.random_start:
            self.state = 0
        else:
            # A start state that is not the goal (may be a blocked cell, as in SB3)
            self.state = int(self.np_random.integers(0, self.max_state))
        return self.state_mapping[self.state], {}

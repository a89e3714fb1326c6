"""VecCheckNan: find where NaN or inf first appears (actions or env outputs)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper


class VecCheckNan(VecEnvWrapper):
    """Check actions, observations and rewards for NaN and inf, and say where they came from.

    :param venv: the VecEnv to wrap
    :param raise_exception: raise a ValueError (True) or warn (False)
    :param warn_once: warn only once (ignored when raising)
    :param check_inf: also check for +/- inf
    """

    def __init__(
        self, venv: VecEnv, raise_exception: bool = False, warn_once: bool = True, check_inf: bool = True
    ):
        super().__init__(venv)
        self.raise_exception = raise_exception
        self.warn_once = warn_once
        self.check_inf = check_inf
        self._user_warned = False
        self._actions: np.ndarray | None = None
        self._observations: VecEnvObs | None = None

    def step_async(self, actions: np.ndarray) -> None:
        self._check_val(event="step_async", actions=actions)
        self._actions = actions
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        self._check_val(event="step_wait", observations=observations, rewards=rewards, dones=dones)
        self._observations = observations
        return observations, rewards, dones, infos

    def reset(self) -> VecEnvObs:
        observations = self.venv.reset()
        self._actions = None
        self._check_val(event="reset", observations=observations)
        self._observations = observations
        return observations

    def check_array_value(self, name: str, value: np.ndarray) -> list[tuple[str, str]]:
        """List the problems found in one array.

        :param name: the array's name in messages
        :param value: the array
        :return: (name, "inf" or "nan") pairs
        """
        found: list[tuple[str, str]] = []
        value = np.asarray(value)
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.complexfloating)):
            return found  # integers and booleans cannot hold NaN or inf
        has_nan = bool(np.any(np.isnan(value)))
        has_inf = self.check_inf and bool(np.any(np.isinf(value)))
        if has_inf:
            found.append((name, "inf"))
        if has_nan:
            found.append((name, "nan"))
        return found

    def _check_val(self, event: str, **kwargs: Any) -> None:
        if not self.raise_exception and self.warn_once and self._user_warned:
            return
        found: list[tuple[str, str]] = []
        for name, value in kwargs.items():
            if isinstance(value, (np.ndarray, list)):
                found += self.check_array_value(name, np.asarray(value))
            elif isinstance(value, dict):
                for inner_name, inner_val in value.items():
                    found += self.check_array_value(f"{name}.{inner_name}", inner_val)
            elif isinstance(value, tuple):
                for idx, inner_val in enumerate(value):
                    found += self.check_array_value(f"{name}.{idx}", inner_val)
            else:
                raise TypeError(f"Unsupported observation type {type(value)}.")

        if not found:
            return
        self._user_warned = True
        msg = ", ".join(f"found {type_val} in {name}" for name, type_val in found)
        msg += ".\r\nOriginated from the "
        if event == "reset":
            msg += "environment observation (at reset)"
        elif event == "step_wait":
            msg += f"environment, Last given value was: \r\n\taction={self._actions}"
        elif event == "step_async":
            msg += f"RL model, Last given value was: \r\n\tobservations={self._observations}"
        else:
            raise ValueError(f"Internal error: unknown event {event}")
        if self.raise_exception:
            raise ValueError(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)

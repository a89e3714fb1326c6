"""check_env: check that a custom environment follows the Gymnasium API SB3 algorithms expect."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.preprocessing import check_for_nested_spaces, is_image_space_channels_first
from mlx_baselines3.common.vec_env import DummyVecEnv, VecCheckNan

__all__ = ["check_env"]


def _is_numpy_array_space(space: spaces.Space) -> bool:
    """Whether observations of ``space`` are numpy arrays (not dicts, tuples or ints)."""
    return not isinstance(space, (spaces.Dict, spaces.Tuple, spaces.Discrete))


def _starts_at_zero(space: spaces.Space) -> bool:
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return bool(np.all(space.start == 0))
    return True


def _check_non_zero_start(space: spaces.Space, space_type: str = "observation", key: str = "") -> None:
    """Warn about Discrete / MultiDiscrete spaces that do not start at 0."""
    if not _starts_at_zero(space):
        maybe_key = f"(key='{key}')" if key else ""
        warnings.warn(
            f"{type(space).__name__} {space_type} space {maybe_key} with a non-zero start (start={space.start}) "  # type: ignore[attr-defined]
            "is not supported by the algorithms of this library. "
            f"You can use a wrapper or update your {space_type} space.",
            stacklevel=3,
        )


def _check_image_input(observation_space: spaces.Box, key: str = "") -> None:
    """Warn about image-like spaces a CNN policy would mishandle."""
    key = f"'{key}'" if key else ""
    if observation_space.dtype != np.uint8:
        warnings.warn(
            f"It seems that your observation{key and ' ' + key} is an image but its `dtype` "
            f"is ({observation_space.dtype}) whereas it has to be `np.uint8`. "
            "If your observation is not an image, we recommend you to flatten the observation "
            "to have only a 1D vector",
            stacklevel=3,
        )
    if np.any(observation_space.low != 0) or np.any(observation_space.high != 255):
        warnings.warn(
            f"It seems that your observation space{key and ' ' + key} is an image but the "
            "upper and lower bounds are not in [0, 255]. "
            "Because the CNN policy normalize automatically the observation "
            "you may encounter issue if the values are not in that range.",
            stacklevel=3,
        )
    non_channel_idx = 0
    # Channel-first: the first dimension is the channel
    if is_image_space_channels_first(observation_space):
        non_channel_idx = -1
    if observation_space.shape[non_channel_idx] < 36 or observation_space.shape[1] < 36:
        warnings.warn(
            "The minimal resolution for an image is 36x36 for the default `CnnPolicy`. "
            "You might need to use a custom features extractor "
            "cf. https://stable-baselines3.readthedocs.io/en/master/guide/custom_policy.html",
            stacklevel=3,
        )


def _check_box_obs(observation_space: spaces.Box, key: str = "") -> None:
    """Warn about Box observation spaces the default policies do not handle well."""
    key = f"'{key}'" if key else ""
    if len(observation_space.shape) not in (1, 3):
        warnings.warn(
            f"Your observation{key and ' ' + key} has an unconventional shape (neither an image, nor a 1D vector). "
            "We recommend you to flatten the observation to have only a 1D vector or use a custom "
            "policy to properly process the data.",
            stacklevel=3,
        )
    if np.any(np.equal(observation_space.low, -np.inf)) or np.any(np.equal(observation_space.high, np.inf)):
        # Infinite bounds are common and fine for vector observations; only mention for images
        if len(observation_space.shape) == 3:
            warnings.warn(
                f"Your image observation space{key and ' ' + key} has infinite bounds.", stacklevel=3
            )
    if np.any(observation_space.low > observation_space.high):
        raise ValueError(
            f"Your observation space{key and ' ' + key} has a lower bound greater than its upper bound."
        )


def _check_spaces(env: gym.Env) -> None:
    """Check that the env defines Gymnasium observation and action spaces."""
    gym_spaces = "cf. https://gymnasium.farama.org/api/spaces/"
    if not hasattr(env, "observation_space"):
        raise AttributeError(f"You must specify an observation space ({gym_spaces})")
    if not hasattr(env, "action_space"):
        raise AttributeError(f"You must specify an action space ({gym_spaces})")
    if not isinstance(env.observation_space, spaces.Space):
        raise TypeError(
            f"The observation space must inherit from gymnasium.spaces ({gym_spaces}), "
            f"got {type(env.observation_space).__name__}"
        )
    if not isinstance(env.action_space, spaces.Space):
        raise TypeError(
            f"The action space must inherit from gymnasium.spaces ({gym_spaces}), got {type(env.action_space).__name__}"
        )
    if isinstance(env.action_space, spaces.Box) and np.any(env.action_space.low > env.action_space.high):
        raise ValueError("Your action space has a lower bound greater than its upper bound.")
    if isinstance(env.action_space, (spaces.Dict, spaces.Tuple)):
        raise TypeError(
            f"Action spaces of type {type(env.action_space).__name__} are not supported by the algorithms."
        )
    if isinstance(env.observation_space, (spaces.Sequence, spaces.Graph, spaces.Text)):
        raise TypeError(
            f"Observation spaces of type {type(env.observation_space).__name__} are not supported."
        )


def _check_unsupported_spaces(
    env: gym.Env, observation_space: spaces.Space, action_space: spaces.Space
) -> bool:
    """Warn about spaces the algorithms do not support; return whether ``check_nan`` is possible."""
    should_skip = False
    if isinstance(observation_space, spaces.Dict):
        nested_dict = False
        for key, space in observation_space.spaces.items():
            if isinstance(space, spaces.Dict):
                nested_dict = True
            _check_non_zero_start(space, "observation", key)
        if nested_dict:
            warnings.warn(
                "Nested observation spaces are not supported (Dict spaces inside Dict space). "
                "You should flatten it to have only one level of keys. "
                "For example, `dict(space1=dict(space2=Box(), space3=Box()), spaces4=Discrete())` "
                "is not supported but `dict(space2=Box(), spaces3=Box(), spaces4=Discrete())` is.",
                stacklevel=2,
            )
    if isinstance(observation_space, spaces.MultiDiscrete) and len(observation_space.nvec.shape) > 1:
        warnings.warn(
            f"The MultiDiscrete observation space uses a multidimensional array {observation_space.nvec} "
            "which is currently not supported. You should flatten it to a 1D array.",
            stacklevel=2,
        )
    if isinstance(observation_space, spaces.Tuple):
        warnings.warn(
            "The observation space is a Tuple, this is currently not supported by the algorithms. "
            "You can use a gymnasium wrapper to flatten it or convert it to a Dict space.",
            stacklevel=2,
        )
        should_skip = True
    _check_non_zero_start(observation_space, "observation")
    _check_non_zero_start(action_space, "action")
    if isinstance(action_space, spaces.MultiDiscrete) and len(action_space.nvec.shape) > 1:
        warnings.warn(
            f"The MultiDiscrete action space uses a multidimensional array {action_space.nvec} "
            "which is currently not supported. You should flatten it to a 1D array.",
            stacklevel=2,
        )
    try:
        check_for_nested_spaces(observation_space)
    except (NotImplementedError, ValueError):
        should_skip = True
    return should_skip


def _check_nan(env: gym.Env) -> None:
    """Step the env with random actions and raise on NaN / inf in observations or rewards."""
    vec_env = VecCheckNan(DummyVecEnv([lambda: env]), raise_exception=True)
    vec_env.reset()
    for _ in range(10):
        action = np.array([env.action_space.sample()])
        vec_env.step(action)


def _is_goal_env(env: gym.Env) -> bool:
    """Whether the env follows the goal-env interface (``compute_reward`` + goal keys)."""
    return hasattr(env.unwrapped, "compute_reward")


def _check_goal_env_obs(obs: dict, observation_space: spaces.Space, method_name: str) -> None:
    """Check the keys of a goal-env observation."""
    if not isinstance(observation_space, spaces.Dict):
        raise TypeError(
            f"The observation space of a goal env (one with `compute_reward`) must be a Dict, got {observation_space}"
        )
    for key in ("achieved_goal", "desired_goal"):
        if key not in observation_space.spaces:
            raise KeyError(f"The observation space of a goal env must have the key '{key}' ({method_name})")


def _check_goal_env_compute_reward(obs: dict, env: gym.Env, reward: float, info: dict[str, Any]) -> None:
    """Check that ``compute_reward`` gives the step's reward and works on batches."""
    achieved_goal, desired_goal = obs["achieved_goal"], obs["desired_goal"]
    if reward != env.unwrapped.compute_reward(achieved_goal, desired_goal, info):  # type: ignore[attr-defined]
        raise ValueError("The reward returned by step() differs from env.compute_reward(...)")
    # Vectorised call: a batch of two
    achieved = np.array([achieved_goal, achieved_goal])
    desired = np.array([desired_goal, desired_goal])
    rewards = env.unwrapped.compute_reward(achieved, desired, np.array([info, info]))  # type: ignore[attr-defined]
    if np.shape(rewards) != (2,):
        raise ValueError(
            f"env.compute_reward must be vectorised: a batch of 2 goals gave shape {np.shape(rewards)}"
        )
    if rewards[0] != reward:
        raise ValueError(f"env.compute_reward on a batch gave {rewards[0]}, the step gave {reward}")


def _check_obs(obs: Any, observation_space: spaces.Space, method_name: str) -> None:
    """Check one observation against the space: type, shape, dtype, bounds."""
    if not isinstance(observation_space, spaces.Tuple) and isinstance(obs, tuple):
        raise TypeError(
            f"The observation returned by the `{method_name}()` method should be a single value, not a tuple"
        )
    if isinstance(observation_space, spaces.Discrete):
        # Python ints and numpy integer scalars / 0-d arrays are fine
        if not (isinstance(obs, (int, np.integer)) or (isinstance(obs, np.ndarray) and obs.shape == ())):
            raise TypeError(
                f"The observation returned by `{method_name}()` method must be an int "
                f"(Discrete observation space), got {type(obs).__name__}"
            )
    elif _is_numpy_array_space(observation_space):
        if not isinstance(obs, np.ndarray):
            raise TypeError(f"The observation returned by `{method_name}()` method must be a numpy array")
        if observation_space.shape != obs.shape:
            raise ValueError(
                f"The observation returned by the `{method_name}()` method does not match the shape "
                f"of the given observation space {observation_space}. "
                f"Expected: {observation_space.shape}, actual shape: {obs.shape}"
            )
        if not np.can_cast(obs.dtype, observation_space.dtype):  # type: ignore[arg-type]
            raise TypeError(
                f"The observation returned by the `{method_name}()` method does not match the data type "
                f"(cannot cast) of the given observation space {observation_space}. "
                f"Expected: {observation_space.dtype}, actual dtype: {obs.dtype}"
            )
        if isinstance(observation_space, spaces.Box):
            lower_bounds, upper_bounds = observation_space.low, observation_space.high
            invalid_indices = np.where(np.logical_or(obs < lower_bounds, obs > upper_bounds))
            if (obs > upper_bounds).any() or (obs < lower_bounds).any():
                message = (
                    f"The observation returned by the `{method_name}()` method does not match the bounds "
                    f"of the given observation space {observation_space}. \n"
                )
                message += f"{len(invalid_indices[0])} invalid indices: \n"
                for index in zip(*invalid_indices):
                    index_str = ",".join(map(str, index))
                    message += (
                        f"Expected: {lower_bounds[index]} <= obs[{index_str}] <= {upper_bounds[index]}, "
                        f"actual value: {obs[index]} \n"
                    )
                raise ValueError(message)
    if not observation_space.contains(obs):
        raise ValueError(
            f"The observation returned by the `{method_name}()` method does not match the given "
            f"observation space {observation_space}"
        )


def _check_returned_values(env: gym.Env, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Check what reset() and step() return."""
    reset_returns = env.reset()
    if not isinstance(reset_returns, tuple):
        raise TypeError("The `reset()` method must return a tuple (obs, info)")
    if len(reset_returns) != 2:
        raise ValueError(f"`reset()` must return a tuple of size 2 (obs, info), not {len(reset_returns)}")
    obs, info = reset_returns
    if not isinstance(info, dict):
        raise TypeError(
            f"The second element of the tuple returned by `reset()` must be a dictionary not {info}"
        )

    if _is_goal_env(env):
        _check_goal_env_obs(obs, observation_space, "reset")
    if isinstance(observation_space, spaces.Dict):
        if not isinstance(obs, dict):
            raise TypeError("The observation returned by `reset()` must be a dictionary")
        if obs.keys() != observation_space.spaces.keys():
            raise KeyError(
                "The observation keys returned by `reset()` must match the observation "
                f"space keys: {obs.keys()} != {observation_space.spaces.keys()}"
            )
        for key in observation_space.spaces.keys():
            try:
                _check_obs(obs[key], observation_space.spaces[key], "reset")
            except (TypeError, ValueError) as error:
                raise type(error)(f"Error while checking key={key}: " + str(error)) from error
    else:
        _check_obs(obs, observation_space, "reset")

    # Sample a random action
    action = action_space.sample()
    data = env.step(action)
    if len(data) != 5:
        raise ValueError(
            "The `step()` method must return five values: "
            f"obs, reward, terminated, truncated, info. Actual: {len(data)} values returned."
        )
    obs, reward, terminated, truncated, info = data
    if isinstance(observation_space, spaces.Dict):
        if not isinstance(obs, dict):
            raise TypeError("The observation returned by `step()` must be a dictionary")
        if _is_goal_env(env):
            _check_goal_env_obs(obs, observation_space, "step")
            _check_goal_env_compute_reward(obs, env, float(reward), info)
        if obs.keys() != observation_space.spaces.keys():
            raise KeyError(
                "The observation keys returned by `step()` must match the observation "
                f"space keys: {obs.keys()} != {observation_space.spaces.keys()}"
            )
        for key in observation_space.spaces.keys():
            try:
                _check_obs(obs[key], observation_space.spaces[key], "step")
            except (TypeError, ValueError) as error:
                raise type(error)(f"Error while checking key={key}: " + str(error)) from error
    else:
        _check_obs(obs, observation_space, "step")

    if not isinstance(reward, (float, int, np.floating, np.integer)):
        raise TypeError(f"The reward returned by `step()` must be a float, got {type(reward).__name__}")
    if not isinstance(terminated, (bool, np.bool_)):
        raise TypeError(f"The `terminated` signal must be a boolean, got {type(terminated).__name__}")
    if not isinstance(truncated, (bool, np.bool_)):
        raise TypeError(f"The `truncated` signal must be a boolean, got {type(truncated).__name__}")
    if not isinstance(info, dict):
        raise TypeError(
            f"The `info` returned by `step()` must be a python dictionary, got {type(info).__name__}"
        )


def _check_reset_seed(env: gym.Env) -> None:
    """Check that reset accepts ``seed`` and ``options`` keywords."""
    try:
        env.reset(seed=0)
    except TypeError as exc:
        raise TypeError(
            "The reset() method must accept a `seed` keyword argument "
            "(def reset(self, *, seed=None, options=None)) and call super().reset(seed=seed)"
        ) from exc
    try:
        env.reset(options={})
    except TypeError as exc:
        raise TypeError("The reset() method must accept an `options` keyword argument") from exc


def _check_render(env: gym.Env, warn: bool = False) -> None:
    """Check that render() works for the env's render mode."""
    render_modes = env.metadata.get("render_modes")
    if render_modes is None:
        if warn:
            warnings.warn(
                "No render modes was declared in the environment (env.metadata['render_modes'] is None or "
                "not defined), you may have trouble when calling `.render()`.",
                stacklevel=2,
            )
    if env.render_mode is not None:
        env.render()
    env.close()


def check_env(env: gym.Env, warn: bool = True, skip_render_check: bool = True) -> None:
    """Check that an environment follows the Gymnasium API and works with the algorithms.

    Errors (wrong types, shapes, dtypes, bounds, return values) raise with a message naming
    the problem; advice (spaces the default policies handle badly) comes as warnings.
    The env is reset and stepped a few times.

    :param env: the environment to check
    :param warn: whether to emit the advice warnings
    :param skip_render_check: do not call ``render()`` (default)
    """
    if not isinstance(env, gym.Env):
        raise TypeError(
            "Your environment must inherit from the gymnasium.Env class cf. https://gymnasium.farama.org/api/env/"
        )
    _check_spaces(env)
    observation_space = env.observation_space
    action_space = env.action_space

    _check_reset_seed(env)

    if warn:
        should_skip = _check_unsupported_spaces(env, observation_space, action_space)
        obs_spaces = (
            observation_space.spaces
            if isinstance(observation_space, spaces.Dict)
            else {"": observation_space}
        )
        for key, space in obs_spaces.items():
            if isinstance(space, spaces.Box):
                _check_box_obs(space, key)
                if len(space.shape) == 3:
                    _check_image_input(space, key)
        if isinstance(action_space, spaces.Box) and (
            np.any(np.abs(action_space.low) != np.abs(action_space.high))
            or np.any(action_space.low != -1)
            or np.any(action_space.high != 1)
        ):
            warnings.warn(
                "We recommend you to use a symmetric and normalized Box action space (range=[-1, 1]) "
                "cf. https://stable-baselines3.readthedocs.io/en/master/guide/rl_tips.html",
                stacklevel=2,
            )
        if isinstance(action_space, spaces.Box):
            if not np.all(np.isfinite(np.array([action_space.low, action_space.high]))):
                raise ValueError(
                    "Continuous action space must have a finite lower and upper bound. "
                    "If you are using a deep learning algorithm, you should use a normalized action space."
                )
            if action_space.dtype != np.dtype(np.float32):
                warnings.warn(
                    f"Your action space has dtype {action_space.dtype}, we recommend using np.float32 to avoid "
                    "cast errors.",
                    stacklevel=2,
                )
    else:
        should_skip = False

    _check_returned_values(env, observation_space, action_space)
    if not skip_render_check:
        _check_render(env, warn=warn)
    if not should_skip and _is_numpy_array_space(observation_space):
        _check_nan(env)

"""Base classes of the vectorised-environment API (SB3's ``VecEnv`` interface).

A ``VecEnv`` steps ``num_envs`` environments in lock-step. Unlike a Gymnasium env it
resets sub-environments automatically: when one finishes, ``step`` returns the first
observation of its next episode and stores the last one in
``infos[i]["terminal_observation"]``.
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from copy import deepcopy
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np

# Observations of a VecEnv: one stacked array, a dict of arrays, or a tuple of arrays
VecEnvObs = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]
# (observations, rewards, dones, infos)
VecEnvStepReturn = tuple[VecEnvObs, np.ndarray, np.ndarray, list[dict]]
# Which sub-environments a method applies to: all (None), one index, or several
VecEnvIndices = None | int | Iterable[int]


def tile_images(images_nhwc: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Tile N images of shape (H, W, C) into one roughly square image.

    The grid has ``ceil(sqrt(N))`` columns; missing cells are black.

    :param images_nhwc: images as a (N, H, W, C) array or a sequence of (H, W, C) arrays
    :return: one (H * rows, W * cols, C) image
    """
    img_nhwc = np.asarray(images_nhwc)
    if img_nhwc.ndim != 4:
        raise ValueError(f"tile_images expects images of shape (N, H, W, C), got shape {img_nhwc.shape}")
    n_images, height, width, n_channels = img_nhwc.shape
    new_height = int(np.ceil(np.sqrt(n_images)))
    new_width = int(np.ceil(float(n_images) / new_height))
    padding = np.zeros((new_height * new_width - n_images, height, width, n_channels), dtype=img_nhwc.dtype)
    grid = np.concatenate([img_nhwc, padding], axis=0)
    # (rows, cols, H, W, C) -> (rows, H, cols, W, C) -> (rows*H, cols*W, C)
    grid = grid.reshape(new_height, new_width, height, width, n_channels)
    grid = grid.transpose(0, 2, 1, 3, 4)
    return grid.reshape(new_height * height, new_width * width, n_channels)


class VecEnv(ABC):
    """An abstract asynchronous, vectorised environment.

    :param num_envs: number of environments
    :param observation_space: observation space of one environment
    :param action_space: action space of one environment
    """

    def __init__(self, num_envs: int, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        self.num_envs = num_envs
        self.observation_space = observation_space
        self.action_space = action_space
        # Info dicts returned by the last reset of each env
        self.reset_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        # Seeds and options applied at the next reset
        self._seeds: list[int | None] = [None for _ in range(num_envs)]
        self._options: list[dict[str, Any]] = [{} for _ in range(num_envs)]

        try:
            render_modes = self.get_attr("render_mode")
        except AttributeError:
            warnings.warn(
                "The `render_mode` attribute is not defined in your environment. It will be set to None.",
                stacklevel=2,
            )
            render_modes = [None for _ in range(num_envs)]
        if not all(mode == render_modes[0] for mode in render_modes):
            raise ValueError("render_mode must be the same for all environments of a VecEnv")
        self.render_mode = render_modes[0]

        render_fps = None
        metadata_list = self.get_attr("metadata")
        if metadata_list and isinstance(metadata_list[0], dict):
            render_fps = metadata_list[0].get("render_fps")
        self.metadata: dict[str, Any] = {"render_modes": [], "render_fps": render_fps}
        if self.render_mode is not None:
            if self.render_mode == "rgb_array":
                self.metadata["render_modes"] = ["human", "rgb_array"]
            else:
                self.metadata["render_modes"] = [self.render_mode]

    def _reset_seeds(self) -> None:
        """Forget the seeds once they have been used by a reset."""
        self._seeds = [None for _ in range(self.num_envs)]

    def _reset_options(self) -> None:
        """Forget the options once they have been used by a reset."""
        self._options = [{} for _ in range(self.num_envs)]

    @abstractmethod
    def reset(self) -> VecEnvObs:
        """Reset all environments and return their first observations.

        Seeds given with :meth:`seed` and options given with :meth:`set_options` are applied
        at this reset, then forgotten. The reset infos are stored in ``self.reset_infos``.

        :return: the stacked observations
        """

    @abstractmethod
    def step_async(self, actions: np.ndarray) -> None:
        """Tell the environments to start stepping with the given actions.

        Call :meth:`step_wait` to get the results. Do not call ``step_async`` again before.

        :param actions: one action per environment
        """

    @abstractmethod
    def step_wait(self) -> VecEnvStepReturn:
        """Wait for the step started by :meth:`step_async`.

        :return: observations, rewards, dones, infos
        """

    @abstractmethod
    def close(self) -> None:
        """Release the resources held by the environments."""

    @abstractmethod
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Return an attribute of the (wrapped) sub-environments.

        :param attr_name: name of the attribute
        :param indices: which environments (default: all)
        :return: the attribute value of each selected environment
        """

    @abstractmethod
    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the (wrapped) sub-environments.

        :param attr_name: name of the attribute
        :param value: new value
        :param indices: which environments (default: all)
        """

    @abstractmethod
    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the (wrapped) sub-environments.

        :param method_name: name of the method
        :param method_args: positional arguments
        :param indices: which environments (default: all)
        :param method_kwargs: keyword arguments
        :return: the return value of each call
        """

    @abstractmethod
    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Tell whether each sub-environment is wrapped with ``wrapper_class``.

        :param wrapper_class: the Gymnasium wrapper class to look for
        :param indices: which environments (default: all)
        :return: one bool per selected environment
        """

    def step(self, actions: np.ndarray) -> VecEnvStepReturn:
        """Step all environments with the given actions.

        :param actions: one action per environment
        :return: observations, rewards, dones, infos
        """
        self.step_async(actions)
        return self.step_wait()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Return an RGB image from each environment (needs ``render_mode="rgb_array"``)."""
        raise NotImplementedError

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Render the environments.

        With ``rgb_array`` the images of all environments are tiled into one image and returned.

        :param mode: rendering mode; deprecated, must match the ``render_mode`` of the envs
        :return: the tiled image, or None
        """
        if mode == "human" and self.render_mode != mode:
            # Human mode can be emulated from rgb_array frames
            if self.render_mode != "rgb_array":
                warnings.warn(
                    f"You tried to render a VecEnv with mode='{mode}' but the render mode of its "
                    f"environments is '{self.render_mode}'. Use render_mode='rgb_array' or 'human' "
                    "when creating the environments.",
                    stacklevel=2,
                )
                return None
        elif mode and self.render_mode != mode:
            warnings.warn(
                f"Starting from gymnasium v0.26, render modes are set when the env is created. "
                f"You asked for mode '{mode}' but the environments use '{self.render_mode}'.",
                stacklevel=2,
            )
            return None

        mode = mode or self.render_mode
        if mode is None:
            warnings.warn(
                "You tried to call render() but no `render_mode` was passed to the env constructor.",
                stacklevel=2,
            )
            return None

        if self.render_mode == "human":
            self.env_method("render")
            return None

        if mode in ("rgb_array", "human"):
            images = self.get_images()
            bigimg = tile_images(images)  # type: ignore[arg-type]
            if mode == "human":
                try:
                    import cv2  # type: ignore[import-not-found]
                except ImportError as exc:
                    raise ImportError(
                        "Rendering a VecEnv in human mode from rgb_array needs opencv-python"
                    ) from exc
                cv2.imshow("vecenv", bigimg[:, :, ::-1])
                cv2.waitKey(1)
                return None
            return bigimg

        # Other modes: let each env render itself
        self.env_method("render")
        return None

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        """Set the seeds used at the next reset.

        Environment ``i`` gets ``seed + i``. The seeds are used by the next call to
        :meth:`reset` only, as in SB3.

        :param seed: the base seed (None: random)
        :return: the seeds that will be used
        """
        if seed is None:
            # Draw a random base seed so that different envs still get different seeds
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._seeds = [seed + idx for idx in range(self.num_envs)]
        return self._seeds

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        """Set the options passed to ``env.reset()`` at the next reset.

        :param options: one dict for all environments, or one dict per environment
        """
        if options is None:
            options = {}
        if isinstance(options, dict):
            self._options = deepcopy([options] * self.num_envs)
        else:
            if len(options) != self.num_envs:
                raise ValueError(
                    f"set_options got {len(options)} option dicts for {self.num_envs} environments"
                )
            self._options = deepcopy(list(options))

    @property
    def unwrapped(self) -> VecEnv:
        """The innermost VecEnv (the one that is not a :class:`VecEnvWrapper`)."""
        if isinstance(self, VecEnvWrapper):
            return self.venv.unwrapped
        return self

    def getattr_depth_check(self, name: str, already_found: bool) -> str | None:
        """Return the type name of the outermost wrapper holding ``name`` if it is hidden by another.

        :param name: attribute name
        :param already_found: whether an outer wrapper already has the attribute
        :return: the class name of the VecEnv holding it, or None
        """
        if hasattr(self, name) and already_found:
            return f"{type(self).__module__}.{type(self).__name__}"
        return None

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        """Turn ``indices`` (None, an int or an iterable of ints) into an iterable of ints."""
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, (int, np.integer)):
            return [int(indices)]
        return indices


class VecEnvWrapper(VecEnv):
    """Base class of the wrappers of a VecEnv.

    Attributes not found on the wrapper are looked up on the wrapped VecEnv.

    :param venv: the VecEnv to wrap
    :param observation_space: the new observation space (default: the wrapped one)
    :param action_space: the new action space (default: the wrapped one)
    """

    def __init__(
        self,
        venv: VecEnv,
        observation_space: gym.spaces.Space | None = None,
        action_space: gym.spaces.Space | None = None,
    ):
        if not isinstance(venv, VecEnv):
            raise TypeError(f"{type(self).__name__} wraps a VecEnv, got {type(venv).__name__}")
        self.venv = venv
        super().__init__(
            num_envs=venv.num_envs,
            observation_space=observation_space or venv.observation_space,
            action_space=action_space or venv.action_space,
        )
        self.class_attributes = dict(inspect.getmembers(self.__class__))

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(actions)

    @abstractmethod
    def reset(self) -> VecEnvObs:
        pass

    @abstractmethod
    def step_wait(self) -> VecEnvStepReturn:
        pass

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        return self.venv.seed(seed)

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        return self.venv.set_options(options)

    def close(self) -> None:
        return self.venv.close()

    def render(self, mode: str | None = None) -> np.ndarray | None:
        return self.venv.render(mode=mode)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.venv.get_images()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self.venv.get_attr(attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        return self.venv.set_attr(attr_name, value, indices)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self.venv.env_is_wrapped(wrapper_class, indices=indices)

    def __getattr__(self, name: str) -> Any:
        """Look up an attribute on the wrapped VecEnv.

        Raises if the attribute exists on several wrappers of the stack, as the result would be
        ambiguous.
        """
        # Guard against recursion while the wrapper is being built or unpickled
        if name in ("venv", "class_attributes"):
            raise AttributeError(name)
        blocked_class = self.getattr_depth_check(name, already_found=False)
        if blocked_class is not None:
            own_class = f"{type(self).__module__}.{type(self).__name__}"
            raise AttributeError(
                f"Error: Recursive attribute lookup for {name} from {own_class} is ambiguous "
                f"and hides attribute from {blocked_class}"
            )
        return self.getattr_recursive(name)

    def _get_all_attributes(self) -> dict[str, Any]:
        """All attributes of this wrapper: instance and class attributes."""
        all_attributes = self.__dict__.copy()
        all_attributes.update(self.class_attributes)
        return all_attributes

    def getattr_recursive(self, name: str) -> Any:
        """Return the attribute from the closest VecEnv of the stack that has it.

        :param name: attribute name
        """
        all_attributes = self._get_all_attributes()
        if name in all_attributes:
            return getattr(self, name)
        if hasattr(self.venv, "getattr_recursive"):
            return self.venv.getattr_recursive(name)
        return getattr(self.venv, name)

    def getattr_depth_check(self, name: str, already_found: bool) -> str | None:
        all_attributes = self._get_all_attributes()
        if name in all_attributes and already_found:
            return f"{type(self).__module__}.{type(self).__name__}"
        if name in all_attributes and not already_found:
            return self.venv.getattr_depth_check(name, True)
        return self.venv.getattr_depth_check(name, already_found)


class CloudpickleWrapper:
    """Holds a value that is (un)pickled with cloudpickle, e.g. a lambda building an env.

    :param var: the value to wrap
    """

    def __init__(self, var: Any):
        self.var = var

    def __getstate__(self) -> bytes:
        return cloudpickle.dumps(self.var)

    def __setstate__(self, var: bytes) -> None:
        self.var = cloudpickle.loads(var)

"""``BaseAlgorithm``: what every algorithm shares (env wrapping, learn scaffolding, predict, save/load)."""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import mlx.core as mx
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, ProgressBarCallback
from mlx_baselines3.common.env_util import is_wrapped
from mlx_baselines3.common.logger import Logger
from mlx_baselines3.common.monitor import Monitor
from mlx_baselines3.common.noise import ActionNoise
from mlx_baselines3.common.policies import BasePolicy, get_policy_from_name
from mlx_baselines3.common.preprocessing import (
    check_for_nested_spaces,
    check_observation_space,
    is_image_space,
    is_image_space_channels_first,
)
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import (
    FloatSchedule,
    check_for_correct_spaces,
    get_device,
    set_random_seed,
)
from mlx_baselines3.common.vec_env import (
    DummyVecEnv,
    VecEnv,
    VecNormalize,
    VecTransposeImage,
    is_vecenv_wrapped,
    unwrap_vec_normalize,
)

SelfBaseAlgorithm = TypeVar("SelfBaseAlgorithm", bound="BaseAlgorithm")


def maybe_make_env(env: GymEnv | str | None, verbose: int) -> GymEnv | None:
    """``gym.make(env)`` when ``env`` is an env id string."""
    if isinstance(env, str):
        env_id = env
        if verbose >= 1:
            print(f"Creating environment from the given name '{env_id}'")
        try:
            env = gym.make(env_id)
        except gym.error.Error as exc:
            raise ValueError(f"Could not make environment {env_id!r}: {exc}") from exc
    return env


class BaseAlgorithm(ABC):
    """The base of every RL algorithm (SB3's semantics).

    :param policy: policy class or alias (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``)
    :param env: a gymnasium env, a registered env id, or a VecEnv (None when loading a model)
    :param learning_rate: a float or a schedule of ``progress_remaining``
    :param policy_kwargs: extra keyword arguments for the policy
    :param stats_window_size: episodes averaged in ``rollout/ep_rew_mean`` etc.
    :param tensorboard_log: folder for TensorBoard runs (None: no TensorBoard)
    :param verbose: 0 silent, 1 info (training tables), 2 debug
    :param device: ``"auto"`` (the GPU when MLX has one), ``"cpu"`` or ``"gpu"``
    :param support_multi_env: whether the algorithm accepts several envs
    :param monitor_wrapper: wrap a plain env in ``Monitor``
    :param seed: seed for the PRNGs
    :param use_sde: gSDE (not supported)
    :param sde_sample_freq: gSDE option
    :param supported_action_spaces: the action spaces the algorithm accepts
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {}
    policy: BasePolicy
    observation_space: spaces.Space
    action_space: spaces.Space
    n_envs: int
    lr_schedule: Schedule
    _logger: Logger
    _constructor_args: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Record the constructor arguments (after defaults) so that ``save`` can store them as JSON."""
        obj = super().__new__(cls)
        if not args and not kwargs:  # copy.copy / copy.deepcopy / unpickling: state comes from __dict__
            return obj
        try:
            bound = inspect.signature(cls.__init__).bind(obj, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}(): {exc}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self", None)
        arguments.pop("env", None)
        arguments.pop("_init_setup_model", None)
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if parameter.kind == inspect.Parameter.VAR_KEYWORD and name in arguments:
                arguments.update(arguments.pop(name))
        obj._constructor_args = arguments
        return obj

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        device: Any = "auto",
        support_multi_env: bool = False,
        monitor_wrapper: bool = True,
        seed: int | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        supported_action_spaces: tuple[type[spaces.Space], ...] | None = None,
    ) -> None:
        if isinstance(policy, str):
            self.policy_class = get_policy_from_name(self.policy_aliases, policy)
        else:
            self.policy_class = policy
        self.device = get_device(device)
        mx.set_default_device(self.device)
        if verbose >= 1:
            print(f"Using {self.device} device")
        self.verbose = verbose
        self.policy_kwargs = {} if policy_kwargs is None else dict(policy_kwargs)
        self.num_timesteps = 0
        self._total_timesteps = 0
        self._num_timesteps_at_start = 0
        self.seed = seed
        self.action_noise: ActionNoise | None = None
        self.start_time = 0.0
        self.learning_rate = learning_rate
        self.tensorboard_log = tensorboard_log
        self._last_obs: np.ndarray | dict[str, np.ndarray] | None = None
        self._last_episode_starts: np.ndarray | None = None
        self._last_original_obs: np.ndarray | dict[str, np.ndarray] | None = None
        self._episode_num = 0
        self.use_sde = use_sde
        self.sde_sample_freq = sde_sample_freq
        self._current_progress_remaining = 1.0
        self._stats_window_size = stats_window_size
        self.ep_info_buffer: deque | None = None
        self.ep_success_buffer: deque | None = None
        self._n_updates = 0
        self._custom_logger = False
        self.env: VecEnv | None = None
        self._vec_normalize_env: VecNormalize | None = None
        self.supported_action_spaces = supported_action_spaces

        if use_sde:
            raise NotImplementedError("gSDE (use_sde=True) is not supported by mlx_baselines3")

        if env is not None:
            env = maybe_make_env(env, self.verbose)
            assert env is not None
            env = self._wrap_env(env, self.verbose, monitor_wrapper)
            self.observation_space = env.observation_space
            self.action_space = env.action_space
            self.n_envs = env.num_envs
            self.env = env
            self._vec_normalize_env = unwrap_vec_normalize(env)
            self._check_spaces(policy)
            if not support_multi_env and self.n_envs > 1:
                raise ValueError(
                    "Error: the model does not support multiple envs; it requires a single vectorized environment."
                )

    # Attributes that hold compiled functions or other per-process objects: not copied by
    # copy.copy / copy.deepcopy (they are rebuilt for the copy by _rebuild_after_copy).
    _transient_attributes: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._transient_attributes:
            state.pop(name, None)
        state["device"] = "gpu" if self.device == mx.Device(mx.gpu) else "cpu"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.device = get_device(state["device"])
        self._rebuild_after_copy()

    def _rebuild_after_copy(self) -> None:  # noqa: B027 - optional hook
        """Recreate what ``_transient_attributes`` held (override with the algorithm's compiled functions)."""

    def _check_spaces(self, policy: Any) -> None:
        check_observation_space(self.observation_space)
        if self.supported_action_spaces is not None and not isinstance(
            self.action_space, self.supported_action_spaces
        ):
            raise ValueError(
                f"The algorithm only supports {[s.__name__ for s in self.supported_action_spaces]} as action "
                f"spaces but {self.action_space} was provided"
            )
        if policy in ["MlpPolicy", "CnnPolicy"] and isinstance(self.observation_space, spaces.Dict):
            raise ValueError(f"You must use `MultiInputPolicy` when working with dict observation space, not {policy}")
        if isinstance(self.action_space, spaces.Box) and not (
            np.all(np.isfinite(self.action_space.low)) and np.all(np.isfinite(self.action_space.high))
        ):
            raise ValueError("Continuous action space must have a finite lower and upper bound")

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """Wrap a plain env in Monitor + DummyVecEnv, and images in VecTransposeImage, as SB3 does."""
        if not isinstance(env, VecEnv):
            if not isinstance(env, gym.Env):
                raise TypeError(f"env must be a gymnasium.Env, a VecEnv or an env id, got {type(env).__name__}")
            if not is_wrapped(env, Monitor) and monitor_wrapper:
                if verbose >= 1:
                    print("Wrapping the env with a `Monitor` wrapper")
                env = Monitor(env)
            if verbose >= 1:
                print("Wrapping the env in a DummyVecEnv.")
            env = DummyVecEnv([lambda: env])  # type: ignore[list-item,return-value]
        check_for_nested_spaces(env.observation_space)
        if not is_vecenv_wrapped(env, VecTransposeImage):
            wrap_with_vectranspose = False
            if isinstance(env.observation_space, spaces.Dict):
                for space in env.observation_space.spaces.values():
                    wrap_with_vectranspose = wrap_with_vectranspose or (
                        is_image_space(space) and not is_image_space_channels_first(space)  # type: ignore[arg-type]
                    )
            else:
                wrap_with_vectranspose = is_image_space(env.observation_space) and not is_image_space_channels_first(
                    env.observation_space  # type: ignore[arg-type]
                )
            if wrap_with_vectranspose:
                if verbose >= 1:
                    print("Wrapping the env in a VecTransposeImage.")
                env = VecTransposeImage(env)
        return env

    @abstractmethod
    def _setup_model(self) -> None:
        """Create networks, buffers and optimizers."""

    def set_logger(self, logger: Logger) -> None:
        """Use a custom logger (it is not replaced when ``learn`` starts)."""
        self._logger = logger
        self._custom_logger = True

    @property
    def logger(self) -> Logger:
        """The logger of this algorithm."""
        return self._logger

    def _setup_lr_schedule(self) -> None:
        self.lr_schedule = FloatSchedule(self.learning_rate)

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        self._current_progress_remaining = 1.0 - float(num_timesteps) / float(total_timesteps)

    def _update_learning_rate(self, optimizers: Any) -> None:
        """Set every optimizer's learning rate from the schedule (an array in its state: no recompilation)."""
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", learning_rate)
        if not isinstance(optimizers, (list, tuple)):
            optimizers = [optimizers]
        for optimizer in optimizers:
            optimizer.learning_rate = mx.array(learning_rate, dtype=mx.float32)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if callback is None:
            callback = CallbackList([])
        if not isinstance(callback, BaseCallback):
            if not callable(callback):
                raise TypeError(f"callback must be a BaseCallback, a list, a callable or None, got {callback!r}")
            callback = ConvertCallback(callback)
        if progress_bar:
            callback = CallbackList([callback, ProgressBarCallback()])
        callback.init_callback(self)  # type: ignore[arg-type]
        return callback

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        """Initialise counters, buffers, the first observation, the logger and the callbacks."""
        from mlx_baselines3.common.utils import configure_logger

        self.start_time = time.time_ns()
        if self.env is None:
            raise ValueError("The model has no environment: pass one with set_env(env) or to load(path, env=env)")
        mx.set_default_device(self.device)  # MLX's default device is global: the model being trained sets it
        if self.ep_info_buffer is None or reset_num_timesteps:
            self.ep_info_buffer = deque(maxlen=self._stats_window_size)
            self.ep_success_buffer = deque(maxlen=self._stats_window_size)
        if self.action_noise is not None:
            self.action_noise.reset()
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._episode_num = 0
        else:
            total_timesteps += self.num_timesteps
        self._total_timesteps = total_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        if reset_num_timesteps or self._last_obs is None:
            assert self.env is not None
            self._last_obs = self.env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones((self.env.num_envs,), dtype=bool)
            if self._vec_normalize_env is not None:
                self._last_original_obs = self._vec_normalize_env.get_original_obs()
        if not self._custom_logger:
            self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        callback = self._init_callback(callback, progress_bar)
        return total_timesteps, callback

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        """Collect finished-episode statistics (``info["episode"]``) and successes."""
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        if dones is None:
            dones = np.array([False] * len(infos))
        for idx, info in enumerate(infos):
            maybe_ep_info = info.get("episode")
            maybe_is_success = info.get("is_success")
            if maybe_ep_info is not None:
                self.ep_info_buffer.extend([maybe_ep_info])
            if maybe_is_success is not None and dones[idx]:
                self.ep_success_buffer.append(maybe_is_success)

    def get_env(self) -> VecEnv | None:
        """The (vectorised) training env."""
        return self.env

    def get_vec_normalize_env(self) -> VecNormalize | None:
        """The ``VecNormalize`` wrapper of the training env, if any."""
        return self._vec_normalize_env

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Replace the training env (same spaces and number of envs)."""
        env = self._wrap_env(env, self.verbose)
        if env.num_envs != self.n_envs:
            raise ValueError(
                "The number of environments to be set is different from the number of environments in the model: "
                f"({env.num_envs} != {self.n_envs}), whereas `set_env` requires them to be the same. To load a "
                "model with a different number of environments, you must use `load(path, env)` instead"
            )
        check_for_correct_spaces(env, self.observation_space, self.action_space)
        self._vec_normalize_env = unwrap_vec_normalize(env)
        if force_reset:
            self._last_obs = None
        self.n_envs = env.num_envs
        self.env = env

    @abstractmethod
    def learn(
        self: SelfBaseAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfBaseAlgorithm:
        """Train for ``total_timesteps`` env steps."""

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The policy's action for an observation (or a batch): see ``BasePolicy.predict``."""
        if mx.default_device() != self.device:
            mx.set_default_device(self.device)
        return self.policy.predict(observation, state, episode_start, deterministic)

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed Python, NumPy, MLX, the action space and the env."""
        if seed is None:
            return
        set_random_seed(seed)
        self.action_space.seed(seed)
        if self.env is not None:
            self.env.seed(seed)

    # -- saving ----------------------------------------------------------------------------------

    def _get_mlx_save_params(self) -> tuple[list[str], list[str]]:
        """Attribute paths of the modules and of the optimizers to save."""
        return ["policy"], ["policy.optimizer"]

    def _get_extra_state(self) -> dict[str, np.ndarray]:
        """Training state that is neither a module nor an optimizer (none by default)."""
        return {}

    def _set_extra_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no extra state, got keys {sorted(state)}")

    def get_parameters(self) -> dict[str, dict[str, Any]]:
        """Every module's and optimizer's arrays: ``{"policy": {...}, "policy.optimizer": {...}}``."""
        from mlx_baselines3.common import save_util

        return save_util.get_algorithm_parameters(self)

    def set_parameters(self, load_path_or_dict: str | dict[str, dict[str, Any]], exact_match: bool = True) -> None:
        """Load parameters from a saved model file or a ``get_parameters()`` dict."""
        from mlx_baselines3.common import save_util

        save_util.set_algorithm_parameters(self, load_path_or_dict, exact_match=exact_match)

    def save(
        self,
        path: Any,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save the model to a zip file, atomically (see docs/save_format.md)."""
        from mlx_baselines3.common import save_util

        save_util.save_algorithm(self, path, exclude=exclude, include=include)

    @classmethod
    def load(
        cls: type[SelfBaseAlgorithm],
        path: Any,
        env: GymEnv | None = None,
        device: Any = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> SelfBaseAlgorithm:
        """Load a model saved with :meth:`save`.

        :param path: the zip file (``.zip`` appended when missing)
        :param env: env for further training (its spaces must match the stored ones); None to predict only
        :param device: ``"auto"``, ``"cpu"`` or ``"gpu"``
        :param custom_objects: values that replace stored entries (e.g. a ``learning_rate`` schedule or a
            custom class), without unpickling them
        :param print_system_info: print the system info stored in the file and the current one
        :param force_reset: reset the env before further training
        :param allow_pickle: unpickle the stored objects that are not described as JSON (a user's
            lambda or class). Off by default: only do this for files you trust
        :param kwargs: attributes to change on the loaded model (e.g. ``learning_rate``)
        """
        from mlx_baselines3.common import save_util

        return save_util.load_algorithm(
            cls,
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            allow_pickle=allow_pickle,
            **kwargs,
        )



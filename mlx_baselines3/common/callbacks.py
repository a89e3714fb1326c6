"""Training callbacks, with Stable-Baselines3's classes, arguments and semantics.

A callback is called by ``learn()`` at fixed points: once when training starts, before and after
each rollout, after every environment step (``on_step``; returning False stops training) and once
when training ends. While training, ``self.locals`` holds the algorithm's local variables under
SB3's names (``new_obs``, ``rewards``, ``dones``, ``infos``, ``actions``, ``total_timesteps``, ...).
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from mlx_baselines3.common.base_class import BaseAlgorithm
    from mlx_baselines3.common.logger import Logger
    from mlx_baselines3.common.vec_env import VecEnv


class BaseCallback(ABC):
    """Base class of all callbacks.

    :param verbose: 0 for no output, 1 for info messages, 2 for debug messages
    """

    # The algorithm; set by ``init_callback``.
    model: BaseAlgorithm

    def __init__(self, verbose: int = 0):
        self.n_calls = 0  # number of times on_step() was called
        self.num_timesteps = 0  # the model's num_timesteps at the last call
        self.verbose = verbose
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        # The callback that owns this one (e.g. the EvalCallback of a StopTrainingOnRewardThreshold).
        self.parent: BaseCallback | None = None

    @property
    def training_env(self) -> VecEnv:
        """The environment the model trains on."""
        env = self.model.get_env()
        if env is None:
            raise ValueError(
                "`model.get_env()` returned None: the callback needs a model with an environment"
            )
        return env

    @property
    def logger(self) -> Logger:
        """The model's logger."""
        return self.model.logger

    def init_callback(self, model: BaseAlgorithm) -> None:
        """Attach the callback to ``model`` (called by ``learn`` before training)."""
        self.model = model
        self._init_callback()

    def _init_callback(self) -> None:  # noqa: B027
        pass

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        """Called once before the first rollout, with ``learn``'s local and global variables."""
        self.locals = locals_
        self.globals = globals_
        self.num_timesteps = self.model.num_timesteps
        self._on_training_start()

    def _on_training_start(self) -> None:  # noqa: B027
        pass

    def on_rollout_start(self) -> None:
        """Called before each rollout is collected."""
        self._on_rollout_start()

    def _on_rollout_start(self) -> None:  # noqa: B027
        pass

    @abstractmethod
    def _on_step(self) -> bool:
        """:return: False to stop training."""
        return True

    def on_step(self) -> bool:
        """Called after each ``env.step()`` (one call per vectorised step).

        :return: False to stop training early
        """
        self.n_calls += 1
        self.num_timesteps = self.model.num_timesteps
        return self._on_step()

    def on_training_end(self) -> None:
        """Called once when ``learn`` finishes."""
        self._on_training_end()

    def _on_training_end(self) -> None:  # noqa: B027
        pass

    def on_rollout_end(self) -> None:
        """Called after each rollout, before the policy update."""
        self._on_rollout_end()

    def _on_rollout_end(self) -> None:  # noqa: B027
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        """Refresh ``self.locals`` with the training loop's current local variables."""
        self.locals.update(locals_)
        self.update_child_locals(locals_)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:  # noqa: B027
        """Pass the local variables on to child callbacks (none here)."""


class EventCallback(BaseCallback):
    """A callback that triggers a child callback when an event happens.

    :param callback: called (its ``on_step``) on each event
    :param verbose: verbosity level
    """

    def __init__(self, callback: BaseCallback | None = None, verbose: int = 0):
        super().__init__(verbose=verbose)
        self.callback = callback
        if callback is not None:
            callback.parent = self

    def init_callback(self, model: BaseAlgorithm) -> None:
        super().init_callback(model)
        if self.callback is not None:
            self.callback.init_callback(self.model)

    def _on_training_start(self) -> None:
        if self.callback is not None:
            self.callback.on_training_start(self.locals, self.globals)

    def _on_event(self) -> bool:
        if self.callback is not None:
            return self.callback.on_step()
        return True

    def _on_step(self) -> bool:
        return True

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback.update_locals(locals_)


class CallbackList(BaseCallback):
    """Several callbacks called in order; training stops if any of them returns False.

    :param callbacks: the callbacks
    """

    def __init__(self, callbacks: list[BaseCallback]):
        super().__init__()
        if not isinstance(callbacks, list):
            raise TypeError(f"CallbackList expects a list of callbacks, got {type(callbacks).__name__}")
        for callback in callbacks:
            if not isinstance(callback, BaseCallback):
                raise TypeError(
                    f"CallbackList items must be BaseCallback instances, got {type(callback).__name__}"
                )
        self.callbacks = callbacks

    def _init_callback(self) -> None:
        for callback in self.callbacks:
            callback.init_callback(self.model)
            # A list nested in an EventCallback hands its parent down to its members.
            if callback.parent is None:
                callback.parent = self.parent

    def _on_training_start(self) -> None:
        for callback in self.callbacks:
            callback.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        for callback in self.callbacks:
            callback.on_rollout_start()

    def _on_step(self) -> bool:
        continue_training = True
        for callback in self.callbacks:
            # Every callback is called, even after one asked to stop.
            continue_training = callback.on_step() and continue_training
        return continue_training

    def _on_rollout_end(self) -> None:
        for callback in self.callbacks:
            callback.on_rollout_end()

    def _on_training_end(self) -> None:
        for callback in self.callbacks:
            callback.on_training_end()

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.update_locals(locals_)


class ConvertCallback(BaseCallback):
    """Wrap a function ``f(locals, globals) -> bool`` into a callback called at every step.

    :param callback: the function; a return value of False stops training
    :param verbose: verbosity level
    """

    def __init__(self, callback: Callable[[dict[str, Any], dict[str, Any]], bool] | None, verbose: int = 0):
        super().__init__(verbose)
        self.callback = callback

    def _on_step(self) -> bool:
        if self.callback is not None:
            return self.callback(self.locals, self.globals)
        return True


def _vec_wrappers(env: Any) -> list[Any]:
    """The chain of VecEnv wrappers of ``env`` (outermost first), the base VecEnv excluded."""
    chain = []
    while hasattr(env, "venv"):
        chain.append(env)
        env = env.venv
    return chain


def _has_wrapper(env: Any, class_name: str) -> bool:
    return any(
        type(w).__name__ == class_name or any(c.__name__ == class_name for c in type(w).__mro__)
        for w in _vec_wrappers(env)
    )


def _sync_normalization(env: Any, eval_env: Any) -> None:
    """Copy the VecNormalize statistics of ``env`` into ``eval_env`` (SB3's ``sync_envs_normalization``)."""
    from mlx_baselines3.common import vec_env as vec_env_module

    sync_envs_normalization = getattr(vec_env_module, "sync_envs_normalization", None)
    if sync_envs_normalization is not None:
        sync_envs_normalization(env, eval_env)
        return
    from copy import deepcopy

    train_chain, eval_chain = _vec_wrappers(env), _vec_wrappers(eval_env)
    if len(train_chain) != len(eval_chain):
        raise AttributeError("training and eval envs have different VecEnv wrappers")
    for train_wrapper, eval_wrapper in zip(train_chain, eval_chain):
        if hasattr(train_wrapper, "obs_rms"):
            eval_wrapper.obs_rms = deepcopy(train_wrapper.obs_rms)
            eval_wrapper.ret_rms = deepcopy(train_wrapper.ret_rms)


class EvalCallback(EventCallback):
    """Evaluate the agent every ``eval_freq`` calls, log the results and keep the best model.

    :param eval_env: environment to evaluate on (a plain Gymnasium env is wrapped in a DummyVecEnv,
        and in a VecTransposeImage when the training env has one)
    :param callback_on_new_best: called when a new best mean reward is reached
    :param callback_after_eval: called after every evaluation
    :param n_eval_episodes: episodes per evaluation
    :param eval_freq: evaluate every ``eval_freq`` calls of the callback (i.e. every
        ``eval_freq * n_envs`` environment steps); 0 or less disables it
    :param log_path: folder where ``evaluations.npz`` is written (keys ``timesteps``, ``results``,
        ``ep_lengths`` and, when the env reports ``is_success``, ``successes``)
    :param best_model_save_path: folder where ``best_model.zip`` is saved
    :param deterministic: evaluate with deterministic actions
    :param render: render the environment during evaluation
    :param verbose: verbosity level
    :param warn: warn when the eval env is not wrapped in a Monitor (passed to ``evaluate_policy``)
    """

    def __init__(
        self,
        eval_env: gym.Env | VecEnv,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        log_path: str | None = None,
        best_model_save_path: str | None = None,
        deterministic: bool = True,
        render: bool = False,
        verbose: int = 1,
        warn: bool = True,
    ):
        super().__init__(callback_after_eval, verbose=verbose)
        if n_eval_episodes < 1:
            raise ValueError(f"n_eval_episodes must be at least 1, got {n_eval_episodes}")
        self.callback_on_new_best = callback_on_new_best
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.parent = self

        self.n_eval_episodes = n_eval_episodes
        self.eval_freq = eval_freq
        self.best_mean_reward = -np.inf
        self.last_mean_reward = -np.inf
        self.deterministic = deterministic
        self.render = render
        self.warn = warn

        from mlx_baselines3.common.vec_env import DummyVecEnv, VecEnv

        if not isinstance(eval_env, VecEnv):
            plain_env = eval_env
            eval_env = DummyVecEnv([lambda: plain_env])
        self.eval_env: VecEnv = eval_env
        self.best_model_save_path = best_model_save_path
        # Evaluation results go to log_path/evaluations.npz
        if log_path is not None:
            log_path = os.path.join(log_path, "evaluations")
        self.log_path = log_path
        self.evaluations_results: list[list[float]] = []
        self.evaluations_timesteps: list[int] = []
        self.evaluations_length: list[list[int]] = []
        self._is_success_buffer: list[bool] = []
        self.evaluations_successes: list[list[bool]] = []

    def _init_callback(self) -> None:
        training_env = self.training_env
        self._wrap_eval_env_like(training_env)
        if not isinstance(training_env, type(self.eval_env)):
            warnings.warn(
                f"Training and eval env are not of the same type: {training_env} != {self.eval_env}",
                stacklevel=2,
            )
        for name in ("VecNormalize", "VecTransposeImage"):
            in_train, in_eval = _has_wrapper(training_env, name), _has_wrapper(self.eval_env, name)
            if in_train != in_eval:
                where, missing = ("training", "eval") if in_train else ("eval", "training")
                warnings.warn(
                    f"The {where} env is wrapped in {name} but the {missing} env is not: "
                    "evaluation results may not reflect the trained policy.",
                    stacklevel=2,
                )

        if self.best_model_save_path is not None:
            os.makedirs(self.best_model_save_path, exist_ok=True)
        if self.log_path is not None:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.init_callback(self.model)

    def _wrap_eval_env_like(self, training_env: Any) -> None:
        """Add a VecTransposeImage to the eval env when training transposes images and eval does not."""
        if not _has_wrapper(training_env, "VecTransposeImage") or _has_wrapper(
            self.eval_env, "VecTransposeImage"
        ):
            return
        if self.eval_env.observation_space == training_env.observation_space:
            return
        from mlx_baselines3.common import vec_env as vec_env_module

        VecTransposeImage = getattr(vec_env_module, "VecTransposeImage", None)  # noqa: N806
        if VecTransposeImage is None:
            return
        wrapped = VecTransposeImage(self.eval_env)
        if wrapped.observation_space == training_env.observation_space:
            self.eval_env = wrapped

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        """Collect ``info["is_success"]`` at the end of each evaluation episode."""
        info = locals_["info"]
        if locals_["done"]:
            maybe_is_success = info.get("is_success")
            if maybe_is_success is not None:
                self._is_success_buffer.append(bool(maybe_is_success))

    def _on_step(self) -> bool:
        continue_training = True
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            from mlx_baselines3.common.evaluation import evaluate_policy

            if self.model.get_vec_normalize_env() is not None:
                try:
                    _sync_normalization(self.training_env, self.eval_env)
                except (AttributeError, TypeError) as exc:
                    raise AssertionError(
                        "Training and eval env are not wrapped the same way (VecNormalize statistics cannot be "
                        "synchronised); wrap the eval env with the same VecEnv wrappers as the training env."
                    ) from exc

            self._is_success_buffer = []
            episode_rewards, episode_lengths = evaluate_policy(
                self.model,
                self.eval_env,
                n_eval_episodes=self.n_eval_episodes,
                render=self.render,
                deterministic=self.deterministic,
                return_episode_rewards=True,
                warn=self.warn,
                callback=self._log_success_callback,
            )
            episode_rewards = [float(r) for r in episode_rewards]  # type: ignore[union-attr]
            episode_lengths = [int(n) for n in episode_lengths]  # type: ignore[union-attr]

            if self.log_path is not None:
                self.evaluations_timesteps.append(self.num_timesteps)
                self.evaluations_results.append(episode_rewards)
                self.evaluations_length.append(episode_lengths)
                kwargs: dict[str, Any] = {}
                if len(self._is_success_buffer) > 0:
                    self.evaluations_successes.append(self._is_success_buffer)
                    kwargs = {"successes": self.evaluations_successes}
                np.savez(
                    self.log_path,
                    timesteps=self.evaluations_timesteps,
                    results=self.evaluations_results,
                    ep_lengths=self.evaluations_length,
                    **kwargs,
                )

            mean_reward, std_reward = float(np.mean(episode_rewards)), float(np.std(episode_rewards))
            mean_ep_length, std_ep_length = float(np.mean(episode_lengths)), float(np.std(episode_lengths))
            self.last_mean_reward = mean_reward

            if self.verbose >= 1:
                print(
                    f"Eval num_timesteps={self.num_timesteps}, episode_reward={mean_reward:.2f} +/- {std_reward:.2f}"
                )
                print(f"Episode length: {mean_ep_length:.2f} +/- {std_ep_length:.2f}")
            self.logger.record("eval/mean_reward", mean_reward)
            self.logger.record("eval/mean_ep_length", mean_ep_length)

            if len(self._is_success_buffer) > 0:
                success_rate = float(np.mean(self._is_success_buffer))
                if self.verbose >= 1:
                    print(f"Success rate: {100 * success_rate:.2f}%")
                self.logger.record("eval/success_rate", success_rate)

            self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
            self.logger.dump(self.num_timesteps)

            if mean_reward > self.best_mean_reward:
                if self.verbose >= 1:
                    print("New best mean reward!")
                if self.best_model_save_path is not None:
                    self.model.save(os.path.join(self.best_model_save_path, "best_model"))
                self.best_mean_reward = mean_reward
                if self.callback_on_new_best is not None:
                    continue_training = self.callback_on_new_best.on_step()

            if self.callback is not None:
                continue_training = continue_training and self._on_event()

        return continue_training

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback.update_locals(locals_)


class StopTrainingOnRewardThreshold(BaseCallback):
    """Stop training once the best mean evaluation reward reaches a threshold.

    Use it as ``EvalCallback(callback_on_new_best=...)``.

    :param reward_threshold: training stops when the best mean reward is at least this
    :param verbose: verbosity level
    """

    parent: EvalCallback

    def __init__(self, reward_threshold: float, verbose: int = 0):
        super().__init__(verbose=verbose)
        self.reward_threshold = reward_threshold

    def _on_step(self) -> bool:
        if self.parent is None:
            raise AssertionError(
                "``StopTrainingOnRewardThreshold`` callback must be used with an ``EvalCallback``"
            )
        continue_training = bool(self.parent.best_mean_reward < self.reward_threshold)
        if self.verbose >= 1 and not continue_training:
            print(
                f"Stopping training because the mean reward {self.parent.best_mean_reward:.2f} "
                f"is above the threshold {self.reward_threshold}"
            )
        return continue_training


class EveryNTimesteps(EventCallback):
    """Trigger a callback every ``n_steps`` timesteps.

    :param n_steps: number of timesteps between two triggers
    :param callback: the callback to trigger
    """

    def __init__(self, n_steps: int, callback: BaseCallback):
        super().__init__(callback)
        if n_steps <= 0:
            raise ValueError(f"n_steps must be positive, got {n_steps}")
        self.n_steps = n_steps
        self.last_time_trigger = 0

    def _on_step(self) -> bool:
        if (self.num_timesteps - self.last_time_trigger) >= self.n_steps:
            self.last_time_trigger = self.num_timesteps
            return self._on_event()
        return True


class LogEveryNTimesteps(EveryNTimesteps):
    """Dump the model's logs every ``n_steps`` timesteps (instead of once per iteration).

    :param n_steps: number of timesteps between two dumps
    """

    def __init__(self, n_steps: int):
        super().__init__(n_steps, callback=ConvertCallback(self._log_data))

    def _log_data(self, _locals: dict[str, Any], _globals: dict[str, Any]) -> bool:
        dump_logs = getattr(self.model, "dump_logs", None) or getattr(self.model, "_dump_logs", None)
        if dump_logs is None:
            raise AttributeError(f"{type(self.model).__name__} has no `dump_logs` method")
        dump_logs()
        return True


class StopTrainingOnMaxEpisodes(BaseCallback):
    """Stop training after a number of episodes (counted over all environments).

    With ``n_envs`` environments, training stops after ``max_episodes * n_envs`` episodes in total.

    :param max_episodes: episodes per environment
    :param verbose: verbosity level
    """

    def __init__(self, max_episodes: int, verbose: int = 0):
        super().__init__(verbose=verbose)
        self.max_episodes = max_episodes
        self._total_max_episodes = max_episodes
        self.n_episodes = 0

    def _init_callback(self) -> None:
        self._total_max_episodes = self.max_episodes * self.training_env.num_envs

    def _on_step(self) -> bool:
        if "dones" not in self.locals:
            raise AssertionError(
                "`dones` variable is not defined, please check your code next to `callback.on_step()`"
            )
        self.n_episodes += int(np.sum(self.locals["dones"]))
        continue_training = self.n_episodes < self._total_max_episodes
        if self.verbose >= 1 and not continue_training:
            mean_episodes_per_env = self.n_episodes / self.training_env.num_envs
            mean_ep_str = (
                f"with an average of {mean_episodes_per_env:.2f} episodes per env"
                if self.training_env.num_envs > 1
                else ""
            )
            print(
                f"Stopping training with a total of {self.num_timesteps} steps because the "
                f"{self.locals.get('tb_log_name')} model reached max_episodes={self.max_episodes}, "
                f"by playing for {self.n_episodes} episodes {mean_ep_str}"
            )
        return continue_training


class StopTrainingOnNoModelImprovement(BaseCallback):
    """Stop training when the best mean evaluation reward has not improved for some evaluations.

    Use it as ``EvalCallback(callback_after_eval=...)``.

    :param max_no_improvement_evals: evaluations without a new best before stopping
    :param min_evals: evaluations to run before counting
    :param verbose: verbosity level
    """

    parent: EvalCallback

    def __init__(self, max_no_improvement_evals: int, min_evals: int = 0, verbose: int = 0):
        super().__init__(verbose=verbose)
        self.max_no_improvement_evals = max_no_improvement_evals
        self.min_evals = min_evals
        self.last_best_mean_reward = -np.inf
        self.no_improvement_evals = 0

    def _on_step(self) -> bool:
        if self.parent is None:
            raise AssertionError(
                "``StopTrainingOnNoModelImprovement`` callback must be used with an ``EvalCallback``"
            )
        continue_training = True
        if self.n_calls > self.min_evals:
            if self.parent.best_mean_reward > self.last_best_mean_reward:
                self.no_improvement_evals = 0
            else:
                self.no_improvement_evals += 1
                if self.no_improvement_evals > self.max_no_improvement_evals:
                    continue_training = False
        self.last_best_mean_reward = self.parent.best_mean_reward
        if self.verbose >= 1 and not continue_training:
            print(
                f"Stopping training because there was no new best model in the last {self.no_improvement_evals:d} "
                "evaluations"
            )
        return continue_training


class CheckpointCallback(BaseCallback):
    """Save the model every ``save_freq`` calls, as ``{save_path}/{name_prefix}_{num_timesteps}_steps.zip``.

    With several environments a call is one vectorised step, so the interval in timesteps is
    ``save_freq * n_envs``.

    :param save_freq: save every ``save_freq`` calls
    :param save_path: folder for the checkpoints (created if missing)
    :param name_prefix: prefix of the file names
    :param save_replay_buffer: also save the replay buffer (off-policy algorithms),
        as ``{name_prefix}_replay_buffer_{steps}_steps.pkl``
    :param save_vecnormalize: also save the VecNormalize statistics, as
        ``{name_prefix}_vecnormalize_{steps}_steps.pkl``
    :param verbose: verbosity level (2 prints each save)
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        save_replay_buffer: bool = False,
        save_vecnormalize: bool = False,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if save_freq <= 0:
            raise ValueError(f"save_freq must be positive, got {save_freq}")
        self.save_freq = save_freq
        self.save_path = save_path
        self.name_prefix = name_prefix
        self.save_replay_buffer = save_replay_buffer
        self.save_vecnormalize = save_vecnormalize

    def _init_callback(self) -> None:
        if self.save_path is not None:
            os.makedirs(self.save_path, exist_ok=True)

    def _checkpoint_path(self, checkpoint_type: str = "", extension: str = "") -> str:
        """Path of a checkpoint file for the current timestep.

        :param checkpoint_type: ``""`` for the model, ``"replay_buffer_"`` or ``"vecnormalize_"``
        :param extension: file extension without the dot
        """
        return os.path.join(
            self.save_path, f"{self.name_prefix}_{checkpoint_type}{self.num_timesteps}_steps.{extension}"
        )

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            model_path = self._checkpoint_path(extension="zip")
            self.model.save(model_path)
            if self.verbose >= 2:
                print(f"Saving model checkpoint to {model_path}")

            if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
                replay_buffer_path = self._checkpoint_path("replay_buffer_", extension="pkl")
                self.model.save_replay_buffer(replay_buffer_path)  # type: ignore[attr-defined]
                if self.verbose > 1:
                    print(f"Saving model replay buffer checkpoint to {replay_buffer_path}")

            vec_normalize = self.model.get_vec_normalize_env() if self.save_vecnormalize else None
            if vec_normalize is not None:
                vec_normalize_path = self._checkpoint_path("vecnormalize_", extension="pkl")
                vec_normalize.save(vec_normalize_path)
                if self.verbose >= 2:
                    print(f"Saving model VecNormalize to {vec_normalize_path}")
        return True


class ProgressBarCallback(BaseCallback):
    """Show a progress bar of the timesteps (needs ``tqdm`` and ``rich``: ``pip install mlx-baselines3[extra]``).

    ``model.learn(..., progress_bar=True)`` adds this callback.
    """

    def __init__(self) -> None:
        super().__init__()
        try:
            from tqdm import TqdmExperimentalWarning
            from tqdm.rich import tqdm
        except ImportError as exc:
            raise ImportError(
                "You must install tqdm and rich in order to use the progress bar callback. "
                "They are included in the extra packages: `pip install mlx-baselines3[extra]`"
            ) from exc
        self._tqdm = tqdm
        self._experimental_warning = TqdmExperimentalWarning
        self.pbar: Any = None

    def _on_training_start(self) -> None:
        # Steps left: total_timesteps already includes the timesteps done before this learn() call.
        total = self.locals["total_timesteps"] - self.model.num_timesteps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._experimental_warning)
            self.pbar = self._tqdm(total=total)

    def _on_step(self) -> bool:
        self.pbar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        if self.pbar is not None:
            self.pbar.refresh()
            self.pbar.close()
            self.pbar = None


__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "ConvertCallback",
    "EvalCallback",
    "EventCallback",
    "EveryNTimesteps",
    "LogEveryNTimesteps",
    "ProgressBarCallback",
    "StopTrainingOnMaxEpisodes",
    "StopTrainingOnNoModelImprovement",
    "StopTrainingOnRewardThreshold",
]

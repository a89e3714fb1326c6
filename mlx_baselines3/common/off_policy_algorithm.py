"""``OffPolicyAlgorithm``: the collect-and-train loop shared by DQN, SAC, TD3 and DDPG (SB3's semantics).

Environment interaction, action scaling, replay storage and callbacks follow SB3 exactly.
Training is subclass work: each algorithm builds its gradient step once (a pure function of the
parameter trees, compiled with ``mx.compile`` and every module's, optimizer's and PRNG state
declared), and ``train`` calls it ``gradient_steps`` times, reading the metrics back once.
"""

from __future__ import annotations

import io
import pathlib
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import mlx.core as mx
import numpy as np
from gymnasium import spaces
from mlx.utils import tree_map

from mlx_baselines3.common.base_class import BaseAlgorithm
from mlx_baselines3.common.callbacks import BaseCallback
from mlx_baselines3.common.compile import (
    NonFiniteLossError,
    all_finite,
    chunk_size,
    raise_if_not_finite,
    restored_on_error,
    snapshot_state,
)
from mlx_baselines3.common.noise import ActionNoise, VectorizedActionNoise
from mlx_baselines3.common.policies import BasePolicy
from mlx_baselines3.common.replay_buffer import DictReplayBuffer, NStepReplayBuffer, ReplayBuffer
from mlx_baselines3.common.thread_placement import mlx_threads_on_one_core
from mlx_baselines3.common.type_aliases import (
    GymEnv,
    MaybeCallback,
    RolloutReturn,
    Schedule,
    TrainFreq,
    TrainFrequencyUnit,
)
from mlx_baselines3.common.utils import copy_observation, obs_as_mx, safe_mean, should_collect_more_steps
from mlx_baselines3.common.vec_env import VecEnv

SelfOffPolicyAlgorithm = TypeVar("SelfOffPolicyAlgorithm", bound="OffPolicyAlgorithm")

__all__ = ["OffPolicyAlgorithm", "compile_step", "batch_to_mx", "update_and_check", "NonFiniteLossError"]

_REPLAY_BUFFER_KIND = "ReplayBuffer"
_KNOWN_BUFFERS: dict[str, type[ReplayBuffer]] = {
    "ReplayBuffer": ReplayBuffer,
    "NStepReplayBuffer": NStepReplayBuffer,
    "DictReplayBuffer": DictReplayBuffer,
}


def compile_step(fn: Callable[..., Any], state: list[Any], compile: bool = True) -> Callable[..., Any]:
    """Wrap a gradient step in ``mx.compile`` with ``state`` as both its implicit inputs and outputs.

    ``state`` must list everything the step reads or writes besides its arguments: every module's
    ``.state``, every optimizer's ``.state`` and ``mx.random.state``. Arrays captured but not
    declared would be frozen as constants.

    :param fn: the step
    :param state: the declared state
    :param compile: return ``fn`` unchanged when False (for debugging and tests)
    """
    if not compile:
        return fn
    return mx.compile(fn, inputs=state, outputs=state)


def update_and_check(module: Any, optimizer: Any, grads: Any, *values: mx.array) -> mx.array:
    """``optimizer.update(module, grads)``, reporting whether ``values`` (the losses) are finite.

    A non-finite value is not masked step by step (that would cost a select on every parameter and
    moment of every step): ``train()`` rolls the whole call back instead when any step reported one.

    :return: whether the values were finite (a scalar bool array)
    """
    optimizer.update(module, grads)
    return all_finite(*values)


def batch_to_mx(samples: Any, gamma: float) -> tuple[Any, ...]:
    """A NumPy replay sample as the fixed-structure tuple the compiled steps take.

    ``(observations, actions, next_observations, dones, rewards, discounts)``; ``discounts`` is
    ``gamma`` everywhere unless the buffer computed n-step discounts.
    """

    discounts = samples.discounts
    if discounts is None:
        discounts = np.full_like(samples.rewards, gamma, dtype=np.float32)
    fields = (
        samples.observations,
        samples.actions,
        samples.next_observations,
        samples.dones,
        samples.rewards,
    )
    return tuple(obs_as_mx(field) for field in (*fields, discounts))


def _step_of(array: mx.array, index: int) -> mx.array:
    """``array[index]`` for a static ``index``, as a slice view (indexing would add a gather kernel)."""
    return array[index : index + 1].reshape(array.shape[1:])


def _chunk_of_steps(
    step_fn: Callable[[tuple[Any, ...], dict[str, mx.array], Any], tuple[mx.array, ...]],
    variants: tuple[Any, ...],
    per_chunk: Callable[[tuple[Any, ...]], dict[str, mx.array]] | None,
) -> Callable[[tuple[Any, ...], dict[str, mx.array]], mx.array]:
    """The function a compiled call runs: one ``step_fn`` per variant, on the call's minibatches
    (leaves ``[steps, batch_size, ...]``) and per-step values, giving ``[steps, n_outputs]``."""

    def run_chunk(batch_chunk: tuple[Any, ...], value_chunk: dict[str, mx.array]) -> mx.array:
        if per_chunk is not None:
            chunk_values = per_chunk(batch_chunk)
            assert not set(chunk_values) & set(value_chunk), "per_chunk and per_step keys overlap"
            value_chunk = {**value_chunk, **chunk_values}
        rows = []
        for j, variant in enumerate(variants):
            batch = tree_map(lambda array, j=j: _step_of(array, j), batch_chunk)
            step_values = {key: _step_of(value, j) for key, value in value_chunk.items()}
            results = step_fn(batch, step_values, variant)
            rows.append(mx.stack([_as_float_scalar(r) for r in results]))
        return mx.stack(rows)

    return run_chunk


def _as_float_scalar(value: Any) -> mx.array:
    """A step output as a float32 scalar, adding nodes only where it is not one already."""
    value = mx.array(value) if not isinstance(value, mx.array) else value
    if value.dtype != mx.float32:
        value = value.astype(mx.float32)
    return value if value.ndim == 0 else value.reshape(())


class OffPolicyAlgorithm(BaseAlgorithm):
    """The base of off-policy algorithms (SB3's arguments and semantics).

    :param policy: policy class or alias
    :param env: env, env id or VecEnv
    :param learning_rate: float or schedule of ``progress_remaining``
    :param buffer_size: replay buffer size (transitions, across envs)
    :param learning_starts: env steps of uniformly random actions before learning starts
    :param batch_size: minibatch size of each gradient step
    :param tau: Polyak coefficient of the target networks (1 = hard copy)
    :param gamma: discount factor
    :param train_freq: train every ``train_freq`` steps, or ``(n, "step")`` / ``(n, "episode")``
    :param gradient_steps: gradient steps after each collection; ``-1`` means as many as env
        steps collected (across envs)
    :param action_noise: exploration noise added to Box actions (scaled to [-1, 1])
    :param replay_buffer_class: replay buffer class (chosen from the spaces when None)
    :param replay_buffer_kwargs: extra keyword arguments for it
    :param optimize_memory_usage: memory-efficient buffer variant (see ``ReplayBuffer``)
    :param n_steps: n-step returns when > 1 (uses ``NStepReplayBuffer``)
    :param policy_kwargs: extra keyword arguments for the policy
    :param stats_window_size: episodes averaged in the rollout statistics
    :param tensorboard_log: TensorBoard folder
    :param verbose: verbosity
    :param device: ``"auto"``, ``"cpu"`` or ``"gpu"``
    :param support_multi_env: whether several envs are accepted
    :param monitor_wrapper: wrap a plain env in ``Monitor``
    :param seed: seed
    :param use_sde: gSDE (not supported)
    :param sde_sample_freq: gSDE option
    :param use_sde_at_warmup: gSDE option
    :param sde_support: whether the policy takes a ``use_sde`` argument
    :param supported_action_spaces: accepted action spaces
    """

    actor: Any
    replay_buffer: ReplayBuffer | None
    _transient_attributes = ("_chunk_fns", "_chunk_fns_key", "_train_snapshot")

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = (1, "step"),
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
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
        use_sde_at_warmup: bool = False,
        sde_support: bool = True,
        supported_action_spaces: tuple[type[spaces.Space], ...] | None = None,
    ) -> None:
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=support_multi_env,
            monitor_wrapper=monitor_wrapper,
            seed=seed,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            supported_action_spaces=supported_action_spaces,
        )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= float(tau) <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        if not isinstance(gradient_steps, (int, np.integer)) or (gradient_steps < 0 and gradient_steps != -1):
            raise ValueError(f"gradient_steps must be a non-negative int or -1, got {gradient_steps!r}")
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.buffer_size = buffer_size
        self.batch_size = int(batch_size)
        self.learning_starts = learning_starts
        self.tau = tau
        self.gamma = gamma
        self.gradient_steps = int(gradient_steps)
        self.action_noise = action_noise
        self.optimize_memory_usage = optimize_memory_usage
        self.n_steps = int(n_steps)
        self.replay_buffer = None
        self.replay_buffer_class = replay_buffer_class
        self.replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        self.train_freq: Any = train_freq
        self.use_sde_at_warmup = use_sde_at_warmup
        self._compile = True
        if sde_support:
            self.policy_kwargs["use_sde"] = self.use_sde

    # ------------------------------------------------------------------ setup

    def _convert_train_freq(self) -> None:
        """Turn ``train_freq`` (int or tuple) into a ``TrainFreq``."""
        if isinstance(self.train_freq, TrainFreq):
            return
        train_freq = self.train_freq
        if not isinstance(train_freq, tuple):
            train_freq = (train_freq, "step")
        if len(train_freq) != 2:
            raise ValueError(
                f"train_freq must be an int or a tuple (frequency, unit), got {self.train_freq!r}"
            )
        try:
            unit = TrainFrequencyUnit(train_freq[1])
        except ValueError as error:
            raise ValueError(
                f"The unit of the `train_freq` must be either 'step' or 'episode' not '{train_freq[1]}'!"
            ) from error
        if not isinstance(train_freq[0], (int, np.integer)) or isinstance(train_freq[0], bool):
            raise ValueError(f"The frequency of `train_freq` must be an integer and not {train_freq[0]!r}")
        if train_freq[0] < 1:
            raise ValueError(f"The frequency of `train_freq` must be >= 1, got {train_freq[0]}")
        self.train_freq = TrainFreq(int(train_freq[0]), unit)

    def _make_replay_buffer(self) -> None:
        if self.replay_buffer_class is None:
            if isinstance(self.observation_space, spaces.Dict):
                if self.n_steps > 1:
                    raise NotImplementedError("n-step returns are not supported with Dict observation spaces")
                self.replay_buffer_class = DictReplayBuffer
            elif self.n_steps > 1:
                self.replay_buffer_class = NStepReplayBuffer
                self.replay_buffer_kwargs.update(n_steps=self.n_steps, gamma=self.gamma)
            else:
                self.replay_buffer_class = ReplayBuffer
        if self.replay_buffer is None:
            self.replay_buffer = self.replay_buffer_class(
                self.buffer_size,
                self.observation_space,
                self.action_space,
                device=self.device,
                n_envs=self.n_envs,
                optimize_memory_usage=self.optimize_memory_usage,
                **self.replay_buffer_kwargs,
            )

    def _setup_model(self) -> None:
        """Learning-rate schedule, seeding, replay buffer and policy (subclasses add their steps)."""
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self._make_replay_buffer()
        self.policy = self.policy_class(
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            **self.policy_kwargs,
        )
        self._convert_train_freq()

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        replay_buffer = self.replay_buffer
        truncate_last_traj = (
            self.optimize_memory_usage
            and reset_num_timesteps
            and replay_buffer is not None
            and (replay_buffer.full or replay_buffer.pos > 0)
        )
        if truncate_last_traj:
            warnings.warn(
                "The last trajectory in the replay buffer will be truncated, see "
                "https://github.com/DLR-RM/stable-baselines3/issues/46. You should use "
                "reset_num_timesteps=False or optimize_memory_usage=False to avoid that issue.",
                stacklevel=2,
            )
            assert replay_buffer is not None
            pos = (replay_buffer.pos - 1) % replay_buffer.buffer_size
            replay_buffer.dones[pos] = True
        if self.env is None:
            raise ValueError(
                "The model has no environment: pass one with set_env(env) or to load(path, env=env)"
            )
        if (
            self.action_noise is not None
            and self.env.num_envs > 1
            and not isinstance(self.action_noise, VectorizedActionNoise)
        ):
            self.action_noise = VectorizedActionNoise(self.action_noise, self.env.num_envs)
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    # ------------------------------------------------------------------ replay buffer files

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Save the replay buffer (a zip of JSON metadata and safetensors arrays; nothing pickled).

        A path without a suffix gets ``.pkl`` appended, as in SB3 (the content is not a pickle).
        """
        if self.replay_buffer is None:
            raise ValueError("The replay buffer is not defined: nothing to save")
        from mlx_baselines3.common.serialization import save_json_and_arrays

        arrays, meta = self.replay_buffer.get_state()
        save_json_and_arrays(path, meta, arrays, kind=_REPLAY_BUFFER_KIND, suffix="pkl")  # type: ignore[arg-type]

    def load_replay_buffer(
        self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True
    ) -> None:
        """Load a replay buffer saved with :meth:`save_replay_buffer` into this model.

        :param path: the file (``.pkl`` is tried when the path does not exist)
        :param truncate_last_traj: accepted for SB3 compatibility (used by HER buffers only)
        """
        from mlx_baselines3.common.serialization import load_json_and_arrays

        meta, arrays = load_json_and_arrays(path, kind=_REPLAY_BUFFER_KIND, suffix="pkl")  # type: ignore[arg-type]
        class_name = meta.get("class")
        if self.replay_buffer is not None and type(self.replay_buffer).__name__ == class_name:
            buffer_class: type[ReplayBuffer] = type(self.replay_buffer)
        elif class_name in _KNOWN_BUFFERS:
            buffer_class = _KNOWN_BUFFERS[class_name]
        else:
            raise ValueError(f"Cannot load a replay buffer of class {class_name!r}")
        kwargs: dict[str, Any] = {}
        if buffer_class is not DictReplayBuffer:
            kwargs["optimize_memory_usage"] = bool(meta["optimize_memory_usage"])
        kwargs["handle_timeout_termination"] = bool(meta["handle_timeout_termination"])
        if issubclass(buffer_class, NStepReplayBuffer):
            kwargs.update(n_steps=int(meta["n_steps"]), gamma=float(meta["gamma"]))
        buffer = buffer_class(
            int(meta["buffer_size"]) * int(meta["n_envs"]),
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=int(meta["n_envs"]),
            **kwargs,
        )
        buffer.set_state(arrays, meta)
        self.replay_buffer = buffer

    # ------------------------------------------------------------------ learn

    def learn(
        self: SelfOffPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOffPolicyAlgorithm:
        """Collect experience and train until ``total_timesteps`` env steps.

        :param total_timesteps: number of env steps (summed over envs)
        :param callback: callback(s) called at every env step
        :param log_interval: log every ``log_interval`` episodes
        :param tb_log_name: TensorBoard run name
        :param reset_num_timesteps: restart the timestep counter (False continues a run)
        :param progress_bar: show a progress bar
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        # after _setup_learn: it sets MLX's default device, which decides whether to pin threads
        with mlx_threads_on_one_core():
            callback.on_training_start(locals(), globals())
            assert self.env is not None, "You must set the environment before calling learn()"
            assert isinstance(self.train_freq, TrainFreq)
            assert self.replay_buffer is not None
            while self.num_timesteps < total_timesteps:
                rollout = self.collect_rollouts(
                    self.env,
                    train_freq=self.train_freq,
                    action_noise=self.action_noise,
                    callback=callback,
                    learning_starts=self.learning_starts,
                    replay_buffer=self.replay_buffer,
                    log_interval=log_interval,
                )
                if not rollout.continue_training:
                    break
                if self.num_timesteps > 0 and self.num_timesteps > self.learning_starts:
                    # gradient_steps=-1: as many gradient steps as env steps collected
                    gradient_steps = (
                        self.gradient_steps if self.gradient_steps >= 0 else rollout.episode_timesteps
                    )
                    if gradient_steps > 0:
                        self.train(batch_size=self.batch_size, gradient_steps=gradient_steps)
            callback.on_training_end()
        return self

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """Run ``gradient_steps`` gradient steps on minibatches from the replay buffer."""
        raise NotImplementedError()

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Actions to send to the env, and the actions to store (scaled to [-1, 1] for Box spaces).

        Before ``learning_starts`` steps actions are drawn uniformly from the action space.
        """
        if self.num_timesteps < learning_starts and not (self.use_sde and self.use_sde_at_warmup):
            unscaled_action = np.array([self.action_space.sample() for _ in range(n_envs)])
        else:
            assert self._last_obs is not None, "self._last_obs was not set"
            unscaled_action, _ = self.predict(self._last_obs, deterministic=False)
        if isinstance(self.action_space, spaces.Box):
            scaled_action = self.policy.scale_action(unscaled_action)
            if action_noise is not None:
                scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
            buffer_action = scaled_action
            action = self.policy.unscale_action(scaled_action)
        else:
            buffer_action = unscaled_action
            action = buffer_action
        return action, buffer_action

    def dump_logs(self) -> None:
        """Write the rollout and time statistics to the logger."""
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record(
                "rollout/ep_rew_mean", safe_mean([ep_info["r"] for ep_info in self.ep_info_buffer])
            )
            self.logger.record(
                "rollout/ep_len_mean", safe_mean([ep_info["l"] for ep_info in self.ep_info_buffer])
            )
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        if len(self.ep_success_buffer) > 0:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        self.logger.dump(step=self.num_timesteps)

    _dump_logs = dump_logs

    def _on_step(self) -> None:
        """Called after each env step (DQN updates its target network and exploration rate here)."""

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store a step in the replay buffer; where an episode ended, ``next_obs`` is its
        ``terminal_observation`` (the new observation is already the next episode's first)."""
        if self._vec_normalize_env is not None:
            new_obs_ = self._vec_normalize_env.get_original_obs()
            reward_ = self._vec_normalize_env.get_original_reward()
        else:
            self._last_original_obs, new_obs_, reward_ = self._last_obs, new_obs, reward
        next_obs = copy_observation(new_obs_)
        for i, done in enumerate(dones):
            if done and infos[i].get("terminal_observation") is not None:
                if isinstance(next_obs, dict):
                    terminal_obs = infos[i]["terminal_observation"]
                    if self._vec_normalize_env is not None:
                        terminal_obs = self._vec_normalize_env.unnormalize_obs(terminal_obs)
                    for key in next_obs.keys():
                        next_obs[key][i] = terminal_obs[key]
                else:
                    next_obs[i] = infos[i]["terminal_observation"]
                    if self._vec_normalize_env is not None:
                        next_obs[i] = self._vec_normalize_env.unnormalize_obs(next_obs[i, :])
        replay_buffer.add(
            self._last_original_obs,  # type: ignore[arg-type]
            next_obs,  # type: ignore[arg-type]
            buffer_action,
            reward_,
            dones,
            infos,
        )
        self._last_obs = new_obs
        if self._vec_normalize_env is not None:
            self._last_original_obs = new_obs_

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: ReplayBuffer,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """Step the envs ``train_freq`` steps (or episodes) and store the transitions.

        :return: env steps collected (across envs), episodes finished, and whether to continue
        """
        self.policy.set_training_mode(False)
        num_collected_steps, num_collected_episodes = 0, 0
        assert isinstance(env, VecEnv), "You must pass a VecEnv"
        assert train_freq.frequency > 0, "Should at least collect one step or episode."
        if env.num_envs > 1 and train_freq.unit != TrainFrequencyUnit.STEP:
            raise ValueError("You must use only one env when doing episodic training.")
        callback.on_rollout_start()
        continue_training = True
        while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
            actions, buffer_actions = self._sample_action(learning_starts, action_noise, env.num_envs)
            new_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += env.num_envs
            num_collected_steps += 1
            # callback locals carry SB3's names (new_obs, rewards, dones, infos, actions, ...)
            callback.update_locals(locals())
            if not callback.on_step():
                return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, False)
            self._update_info_buffer(infos, dones)
            self._store_transition(replay_buffer, buffer_actions, new_obs, rewards, dones, infos)  # type: ignore[arg-type]
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            for idx, done in enumerate(dones):
                if done:
                    num_collected_episodes += 1
                    self._episode_num += 1
                    if action_noise is not None:
                        kwargs = dict(indices=[idx]) if env.num_envs > 1 else {}
                        action_noise.reset(**kwargs)
                    if log_interval is not None and self._episode_num % log_interval == 0:
                        self.dump_logs()
        callback.on_rollout_end()
        return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training)

    # ------------------------------------------------------------------ helpers for train()

    def _train_state(self) -> list[Any]:
        """Everything the compiled gradient steps read and write (modules, optimizers, RNG): override."""
        raise NotImplementedError

    # Most gradient steps run per compiled call (bigger: fewer calls, longer first compile).
    update_chunk_size: int = 8

    def _sample_batches(self, gradient_steps: int, batch_size: int) -> tuple[Any, ...]:
        """``gradient_steps`` minibatches drawn at once and moved to MLX in one transfer.

        Every leaf has a leading ``[gradient_steps, batch_size]``. The buffer does not change
        during ``train()``, so this is the same distribution as sampling before each step.
        """
        assert self.replay_buffer is not None
        samples = self.replay_buffer.sample_numpy(gradient_steps * batch_size, env=self._vec_normalize_env)

        def split(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, dict):
                return {key: split(item) for key, item in value.items()}
            return np.asarray(value).reshape(gradient_steps, batch_size, *np.shape(value)[1:])

        return batch_to_mx(type(samples)(*(split(item) for item in samples)), self.gamma)

    def _run_gradient_steps(
        self,
        gradient_steps: int,
        batch_size: int,
        step_fn: Callable[[tuple[Any, ...], dict[str, mx.array], Any], tuple[mx.array, ...]],
        per_step: dict[str, np.ndarray] | None = None,
        variant_of: Callable[[int], Any] = lambda index: None,
        per_chunk: Callable[[tuple[Any, ...]], dict[str, mx.array]] | None = None,
    ) -> np.ndarray:
        """Run ``gradient_steps`` compiled gradient steps, several per call, and read their outputs once.

        :param step_fn: one gradient step ``(batch, step_values, variant) -> outputs`` (scalars),
            traced inside ``mx.compile`` with ``self._train_state()`` declared
        :param per_step: values that differ between steps (e.g. ``tau``), one row per step
        :param variant_of: a static (compile-time) variant of step ``i`` (e.g. TD3's delayed actor
            update); a chunk compiles once per sequence of variants
        :param per_chunk: values computed once per compiled call from all of its minibatches
            (each leaf ``[steps, batch_size, ...]``), one row per step, added to the step values.
            Only for what no gradient step of the call changes (DQN's targets, say): batched, they
            take one large product instead of one small product per step.
        :return: ``[gradient_steps, n_outputs]`` float array
        """
        if gradient_steps <= 0:
            return np.zeros((0, 0), dtype=np.float32)
        batches = self._sample_batches(gradient_steps, batch_size)
        values = {
            key: mx.array(np.asarray(value, dtype=np.float32)) for key, value in (per_step or {}).items()
        }
        state = self._train_state()
        self._train_snapshot = snapshot_state(state)
        # One compiled function per sequence of variants, for as long as the state objects (modules,
        # optimizers) are the same; step_fn may be a fresh closure each call: it must only reach the
        # model through ``self``.
        state_key = tuple(id(item) for item in state)
        if getattr(self, "_chunk_fns_key", None) != state_key:
            self._chunk_fns: dict[Any, Callable[..., mx.array]] = {}
            self._chunk_fns_key = state_key
        chunk = chunk_size(gradient_steps, self.update_chunk_size)
        outputs = []
        with restored_on_error(state, self._train_snapshot):
            for start in range(0, gradient_steps, chunk):
                stop = min(start + chunk, gradient_steps)
                variants = tuple(variant_of(index) for index in range(start, stop))
                compiled = self._chunk_fns.get(variants)
                if compiled is None:
                    compiled = compile_step(
                        _chunk_of_steps(step_fn, variants, per_chunk), state, compile=self._compile
                    )
                    self._chunk_fns[variants] = compiled
                if start == 0 and stop == gradient_steps:  # one chunk: no slicing
                    result = compiled(batches, values)
                else:
                    result = compiled(
                        tree_map(lambda array, start=start, stop=stop: array[start:stop], batches),
                        {key: value[start:stop] for key, value in values.items()},
                    )
                mx.async_eval(result)
                outputs.append(result)
            # The updated networks and optimizer states are evaluated here too, not left for the next
            # action selection to wait on (the same work; it keeps the time where it belongs).
            metrics = outputs[0] if len(outputs) == 1 else mx.concatenate(outputs, axis=0)
            mx.eval(metrics, state)
        return np.array(metrics)

    def _raise_if_not_finite(self, names: Sequence[str], finite: np.ndarray) -> None:
        """Undo this ``train()`` call and raise ``NonFiniteLossError`` if a step was not finite."""
        if np.all(finite):  # the usual case: nothing to gather
            return
        raise_if_not_finite(names, finite, self._train_state(), self._train_snapshot, self.num_timesteps)

"""``OnPolicyAlgorithm``: the rollout-collection loop and the compiled update shared by PPO and A2C."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from gymnasium import spaces
from mlx.utils import tree_map

from mlx_baselines3.common.base_class import BaseAlgorithm
from mlx_baselines3.common.callbacks import BaseCallback
from mlx_baselines3.common.compile import (
    NonFiniteLossError,
    all_finite,
    as_vector,
    chunk_size,
    flat_norm_and_clip_scale,
    guarded_update,
    raise_if_not_finite,
    restored_on_error,
    snapshot_state,
)
from mlx_baselines3.common.flat_update import FlatTraining
from mlx_baselines3.common.numpy_inference import NumpyActorCritic
from mlx_baselines3.common.policies import ActorCriticPolicy
from mlx_baselines3.common.rollout_buffer import DictRolloutBuffer, RolloutBuffer
from mlx_baselines3.common.thread_placement import mlx_threads_on_one_core
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import obs_as_mx, safe_mean
from mlx_baselines3.common.vec_env import VecEnv

__all__ = ["NonFiniteLossError", "OnPolicyAlgorithm"]

SelfOnPolicyAlgorithm = TypeVar("SelfOnPolicyAlgorithm", bound="OnPolicyAlgorithm")

# A loss: (policy, batch, hyper) -> (scalar loss, tuple of scalar terms)
LossFn = Callable[[nn.Module, dict[str, Any], dict[str, mx.array]], tuple[mx.array, tuple[mx.array, ...]]]


class OnPolicyAlgorithm(BaseAlgorithm):
    """The base class of on-policy algorithms (PPO, A2C).

    :param n_steps: steps collected per env between updates
    :param gamma: discount factor
    :param gae_lambda: GAE lambda
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient clipping threshold (global norm)
    :param rollout_buffer_class: buffer class (chosen from the observation space by default)
    :param rollout_buffer_kwargs: its keyword arguments

    Other parameters: see :class:`BaseAlgorithm`.
    """

    rollout_buffer: RolloutBuffer
    policy: ActorCriticPolicy
    _transient_attributes = (
        "_policy_step",
        "_predict_values",
        "_numpy_policy",
        "_rollout_functions_for",
        "_update_step",
        "_update_step_key",
        "_train_flags",
    )
    # Names of the scalar terms a loss returns, in order (for logging and error messages).
    loss_term_names: tuple[str, ...] = ()

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule,
        n_steps: int,
        gamma: float,
        gae_lambda: float,
        ent_coef: float,
        vf_coef: float,
        max_grad_norm: float,
        use_sde: bool,
        sde_sample_freq: int,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        monitor_wrapper: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: Any = "auto",
        _init_setup_model: bool = True,
        supported_action_spaces: tuple[type[spaces.Space], ...] | None = None,
    ) -> None:
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            support_multi_env=True,
            monitor_wrapper=monitor_wrapper,
            seed=seed,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            supported_action_spaces=supported_action_spaces,
        )
        self.n_steps = n_steps
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.max_grad_norm = max_grad_norm
        self.rollout_buffer_class = rollout_buffer_class
        self.rollout_buffer_kwargs = rollout_buffer_kwargs or {}
        # "auto": NumPy replica of the policy for rollouts on the CPU when it covers the policy;
        # "mlx": always the compiled MLX forward pass; "numpy": require the replica.
        self.action_selection = "auto"
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.rollout_buffer_class is None:
            if isinstance(self.observation_space, spaces.Dict):
                self.rollout_buffer_class = DictRolloutBuffer
            else:
                self.rollout_buffer_class = RolloutBuffer
        self.rollout_buffer = self.rollout_buffer_class(
            self.n_steps,
            self.observation_space,
            self.action_space,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            use_sde=self.use_sde,
            **self.policy_kwargs,
        )
        mx.eval(self.policy.parameters())
        self._rollout_functions_for: Any = None
        self._update_step_key: Any = None
        self._build_rollout_functions()

    # -- compiled functions ----------------------------------------------------------------------

    def _rebuild_after_copy(self) -> None:
        self._update_step_key = None
        if hasattr(self, "policy"):
            self._build_rollout_functions()

    def _build_rollout_functions(self) -> None:
        """Compile action selection (actions, values, log-probs) and value prediction.

        On the CPU, a NumPy replica of a standard MLP policy (``NumpyActorCritic``) chooses the
        actions during rollouts: same function, several times cheaper for small batches. Set
        ``model.action_selection = "mlx"`` to always use the compiled MLX path.
        """
        policy = self.policy
        self._rollout_functions_for = policy
        self._numpy_policy = NumpyActorCritic.from_policy(policy)
        self._rollout_numpy = False
        self._policy_step = mx.compile(
            lambda obs: policy(obs), inputs=[policy.state, mx.random.state], outputs=[mx.random.state]
        )
        self._predict_values = mx.compile(lambda obs: policy.predict_values(obs), inputs=[policy.state])

    @property
    def target_kl_enabled(self) -> bool:
        """Whether updates stop early on a KL threshold (PPO's ``target_kl``)."""
        return getattr(self, "target_kl", None) is not None

    def _loss_config(self) -> tuple[LossFn, tuple[Any, ...]]:
        """The algorithm's loss function and the settings it was specialised on (override)."""
        raise NotImplementedError

    def _get_update_step(self) -> Callable[..., tuple[mx.array, ...]]:
        """The compiled update for the current policy, optimizer and settings (rebuilt when they change).

        SB3 reads ``target_kl``, ``normalize_advantage``, ``max_grad_norm`` (None or not) and the
        policy at every update; they are compile-time constants here, so a change triggers a rebuild.
        """
        loss_fn, loss_key = self._loss_config()
        key = (
            id(self.policy),
            id(self.policy.optimizer),
            self.target_kl_enabled,
            self.max_grad_norm is None,
            loss_key,
            self.flat_update,
        )
        if key != self._update_step_key:
            self._update_step = self._make_update_step(loss_fn, kl_stop=self.target_kl_enabled)
            self._update_step_key = key
        return self._update_step

    def _update_hyperparameters(self) -> dict[str, mx.array]:
        """The values an update reads that may change between updates, as arrays (no recompilation)."""
        hyper = {
            "ent_coef": mx.array(self.ent_coef, dtype=mx.float32),
            "vf_coef": mx.array(self.vf_coef, dtype=mx.float32),
        }
        if self.max_grad_norm is not None:
            hyper["max_grad_norm"] = mx.array(self.max_grad_norm, dtype=mx.float32)
        if self.target_kl_enabled:
            hyper["target_kl"] = mx.array(self.target_kl, dtype=mx.float32)  # type: ignore[attr-defined]
        return hyper

    def _make_update_step(
        self, loss_fn: LossFn, kl_stop: bool = False
    ) -> Callable[..., tuple[mx.array, ...]]:
        """Compile the gradient steps: loss, gradients, clipping and the optimizer update.

        The returned function takes ``(data, indices, hyper)``: the whole rollout as MLX arrays,
        the indices of ``K`` consecutive minibatches (``[K, batch_size]``), and the changing
        hyperparameters as arrays. It runs the ``K`` gradient steps one after the other inside one
        compiled call (MLX's per-call overhead is paid once per chunk, not once per step) and
        returns ``(loss [K], terms [K, n_terms], grad_norm [K], stopped_before [K])``. It compiles
        once per distinct ``(K, batch_size)`` shape.

        With ``kl_stop`` (SB3's ``target_kl``), the update is guarded: once
        ``terms[approx_kl] > 1.5 * hyper["target_kl"]`` or a value is not finite, that update and
        every later one of the same ``train()`` call are skipped (an elementwise select inside the
        compiled step). Without it each step is a plain update, and a non-finite value is handled
        after the fact by :meth:`_run_update_epochs`, which rolls the whole ``train()`` call back.
        """
        policy = self.policy
        optimizer = self.policy.optimizer
        assert optimizer is not None
        self._train_flags = {"stop": mx.array(False)}
        flags = self._train_flags
        state: list[Any] = [policy.state, optimizer.state, mx.random.state]
        if kl_stop:
            state.append(flags)
        value_and_grad = nn.value_and_grad(policy, loss_fn)
        clip = self.max_grad_norm is not None
        kl_index = self.loss_term_names.index("approx_kl") if kl_stop else -1
        not_stopped = mx.array(False)

        def one_step(
            data: dict[str, Any], indices: mx.array, hyper: dict[str, mx.array], flat: FlatTraining | None
        ) -> tuple[mx.array, ...]:
            batch = tree_map(lambda array: array[indices], data)
            (loss, terms), grads = value_and_grad(policy, batch, hyper)
            gradient = as_vector(grads)  # the clipping norm's input, and the flat update's
            grad_norm, scale = flat_norm_and_clip_scale(gradient, hyper["max_grad_norm"] if clip else None)
            stopped_before, apply = not_stopped, None
            if kl_stop:
                stopped_before = flags["stop"]
                stop = mx.logical_or(stopped_before, mx.logical_not(all_finite(loss, grad_norm)))
                stop = mx.logical_or(stop, terms[kl_index] > 1.5 * hyper["target_kl"])
                flags["stop"], apply = stop, mx.logical_not(stop)
            if flat is not None:
                flat.update(gradient, scale, apply)
            else:
                guarded_update(policy, optimizer, grads, apply, scale)
            return loss, mx.stack(list(terms)), grad_norm, stopped_before

        def steps(
            data: dict[str, Any], indices: mx.array, hyper: dict[str, mx.array]
        ) -> tuple[mx.array, ...]:
            # With one step per call (A2C) there is no split optimizer kernel to save, and packing
            # costs more than it saves (A2C CartPole 0.98x). Checked when traced: a retrace can
            # follow a change the compiled function's key does not see (a dtype, say).
            packed = self.flat_update and indices.shape[0] > 1 and FlatTraining.supports(policy, optimizer)
            flat = FlatTraining(policy, optimizer) if packed else None
            results = [one_step(data, indices[k], hyper, flat) for k in range(indices.shape[0])]
            if flat is not None:
                flat.finish()
            return tuple(mx.stack([result[i] for result in results]) for i in range(4))

        return mx.compile(steps, inputs=state, outputs=state)

    # Most gradient steps run per compiled call (bigger: fewer calls, longer first compile).
    update_chunk_size: int = 8
    # Parameters and optimizer state packed into flat arrays during a chunk (common/flat_update.py;
    # same results, fewer kernels). False runs the optimizer on each parameter array.
    flat_update: bool = True

    def _minibatch_plan(
        self, total: int, batch_size: int, n_epochs: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The minibatches of ``n_epochs`` shuffled passes, grouped into chunks of consecutive steps.

        :return: ``(indices [K, batch], epoch of each step [K])`` per chunk, in training order. When
            ``total`` is not a multiple of ``batch_size``, each epoch ends with a smaller minibatch
            (SB3's order), so chunks stay within an epoch; otherwise they run across epochs.
        """
        permutations = [np.random.permutation(total).astype(np.int32) for _ in range(n_epochs)]
        n_full, remainder = divmod(total, batch_size)
        plan: list[tuple[np.ndarray, np.ndarray]] = []

        def add_chunks(rows: np.ndarray, epochs: np.ndarray) -> None:
            size = chunk_size(len(rows), self.update_chunk_size)
            for start in range(0, len(rows), size):
                plan.append((rows[start : start + size], epochs[start : start + size]))

        if remainder == 0:
            rows = np.concatenate([perm.reshape(n_full, batch_size) for perm in permutations])
            add_chunks(rows, np.repeat(np.arange(n_epochs), n_full))
        else:
            for epoch, perm in enumerate(permutations):
                if n_full:
                    add_chunks(
                        perm[: n_full * batch_size].reshape(n_full, batch_size), np.full(n_full, epoch)
                    )
                plan.append((perm[n_full * batch_size :].reshape(1, remainder), np.array([epoch])))
        return plan

    def _run_update_epochs(
        self,
        step_fn: Callable[..., tuple[mx.array, ...]],
        n_epochs: int,
        batch_size: int,
        hyper: dict[str, mx.array],
    ) -> dict[str, Any]:
        """Run ``n_epochs`` passes of minibatch updates over the rollout; read metrics once at the end.

        The rollout moves to MLX once; each epoch uses a fresh random permutation; minibatches run
        in chunks of consecutive steps per compiled call (see :meth:`_minibatch_plan`). When the
        rollout size is not a multiple of ``batch_size``, the last minibatch of each epoch is
        smaller (as in SB3; it compiles once more for its shape). With ``target_kl`` the stop flag
        is read after each chunk.

        :raises NonFiniteLossError: naming the terms that were not finite (the update is undone)
        :return: per-step metrics of the steps that ran (``losses``, ``terms``, ``grad_norms``,
            ``epoch`` of each), ``epochs`` started and whether a KL early stop happened
        """
        data = self.rollout_buffer.flat_data()
        mx_data = tree_map(mx.array, data)
        total = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        guarded = "stop" in self._train_flags and self.target_kl_enabled
        self._train_flags["stop"] = mx.array(False)
        assert self.policy.optimizer is not None
        state = [self.policy.state, self.policy.optimizer.state]
        snapshot = snapshot_state(state)
        plan = self._minibatch_plan(total, batch_size, n_epochs)
        # Every minibatch index of the update moves to MLX in one transfer; chunks are views of it
        all_indices = mx.array(np.concatenate([indices.reshape(-1) for indices, _ in plan]))
        offsets = np.cumsum([0] + [indices.size for indices, _ in plan])
        outputs: list[tuple[mx.array, ...]] = []
        epoch_of_step: list[np.ndarray] = []
        with restored_on_error(state, snapshot):
            for (indices, epochs), offset in zip(plan, offsets):
                chunk_indices = all_indices[int(offset) : int(offset) + indices.size].reshape(indices.shape)
                result = step_fn(mx_data, chunk_indices, hyper)
                mx.async_eval(result)
                outputs.append(result)
                epoch_of_step.append(epochs)
                if guarded and bool(self._train_flags["stop"]):
                    break
        losses, terms, grad_norms, stopped_before = (
            np.array(mx.concatenate([out[i] for out in outputs])) for i in range(4)
        )
        ran = ~stopped_before.astype(bool)
        values = np.column_stack([terms, grad_norms, losses])[ran]
        names = (*self.loss_term_names, "grad_norm", "loss")
        raise_if_not_finite(names, np.isfinite(values), state, snapshot, self.num_timesteps)
        epoch = np.concatenate(epoch_of_step)[ran]
        return {
            "losses": losses[ran],
            "terms": terms[ran],
            "grad_norms": grad_norms[ran],
            "epoch": epoch,
            "epochs": int(epoch[-1]) + 1 if len(epoch) else 0,
            "stopped": bool(self._train_flags["stop"]),
        }

    # -- rollouts ----------------------------------------------------------------------------------

    def _clip_actions(self, actions: np.ndarray) -> np.ndarray:
        if isinstance(self.action_space, spaces.Box):
            if self.policy.squash_output:
                return self.policy.unscale_action(actions)
            return np.clip(actions, self.action_space.low, self.action_space.high)
        return actions

    def _use_numpy_policy(self) -> bool:
        choice = getattr(self, "action_selection", "auto")
        if choice not in ("auto", "mlx", "numpy"):
            raise ValueError(f"action_selection must be 'auto', 'mlx' or 'numpy', got {choice!r}")
        if choice == "mlx" or self._numpy_policy is None:
            if choice == "numpy":
                raise ValueError("action_selection='numpy' is not available for this policy")
            return False
        return choice == "numpy" or self.device == mx.Device(mx.cpu)

    def _select_actions(self, obs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled actions, values ``[n_envs, 1]`` and log-probabilities for the current observations."""
        if self._rollout_numpy:
            assert self._numpy_policy is not None
            return self._numpy_policy(obs)
        outputs = self._policy_step(obs_as_mx(obs))
        mx.eval(outputs)
        actions, values, log_probs = (np.array(output) for output in outputs)
        if np.issubdtype(actions.dtype, np.integer):
            actions = actions.astype(np.int64)  # MLX samples uint32: envs doing arithmetic need signed ints
        return actions, values, log_probs

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps of every env (SB3's semantics).

        A step that ended by time limit (``infos[i]["TimeLimit.truncated"]``) has
        ``gamma * V(infos[i]["terminal_observation"])`` added to its reward, so that GAE can stop at
        the episode boundary without treating the time limit as a terminal state.

        :return: False when a callback asked to stop training
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        if self._rollout_functions_for is not self.policy:
            self._build_rollout_functions()
        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()
        self._rollout_numpy = self._use_numpy_policy()
        new_obs: Any = None
        dones: np.ndarray = np.zeros(env.num_envs, dtype=bool)
        while n_steps < n_rollout_steps:
            actions, values, log_probs = self._select_actions(self._last_obs)
            clipped_actions = self._clip_actions(actions)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            rewards = self._bootstrap_truncated(rewards, dones, infos)
            assert self._last_episode_starts is not None
            rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)
            self._last_obs = new_obs
            self._last_episode_starts = dones
        values = self._values(new_obs)
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _values(self, obs: Any) -> np.ndarray:
        """Value estimates ``[B, 1]`` of raw observations (NumPy replica or compiled MLX)."""
        if self._rollout_numpy:
            assert self._numpy_policy is not None
            return self._numpy_policy.values(obs)
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        return np.array(self._predict_values(obs_tensor))

    def _bootstrap_truncated(
        self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> np.ndarray:
        """Add ``gamma * V(terminal_observation)`` to the rewards of time-limit ends (one batched call)."""
        truncated = [
            idx
            for idx, done in enumerate(dones)
            if done
            and infos[idx].get("terminal_observation") is not None
            and infos[idx].get("TimeLimit.truncated", False)
        ]
        if not truncated:
            return rewards
        rewards = np.array(rewards, dtype=np.float32, copy=True)
        terminal_obs = [infos[idx]["terminal_observation"] for idx in truncated]
        if isinstance(self.observation_space, spaces.Dict):
            batch: Any = {
                key: np.stack([obs[key] for obs in terminal_obs]) for key in self.observation_space.spaces
            }
        else:
            batch = np.stack(terminal_obs)
        terminal_values = self._values(batch).reshape(-1)
        rewards[truncated] += self.gamma * terminal_values
        return rewards

    # -- training loop ---------------------------------------------------------------------------

    def train(self) -> None:
        """One update from the collected rollout (implemented by each algorithm)."""
        raise NotImplementedError

    def dump_logs(self, iteration: int = 0) -> None:
        """Write the time/rollout statistics (nothing is printed for episode stats before the first episode ends)."""
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        if iteration > 0:
            self.logger.record("time/iterations", iteration, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record(
                "rollout/ep_rew_mean", safe_mean([ep_info["r"] for ep_info in self.ep_info_buffer])
            )
            self.logger.record(
                "rollout/ep_len_mean", safe_mean([ep_info["l"] for ep_info in self.ep_info_buffer])
            )
        if len(self.ep_success_buffer) > 0:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def learn(
        self: SelfOnPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "OnPolicyAlgorithm",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOnPolicyAlgorithm:
        """Collect rollouts and update, until ``total_timesteps`` env steps have been taken."""
        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        # after _setup_learn: it sets MLX's default device, which decides whether to pin threads
        with mlx_threads_on_one_core():
            callback.on_training_start(locals(), globals())
            assert self.env is not None
            while self.num_timesteps < total_timesteps:
                continue_training = self.collect_rollouts(self.env, callback, self.rollout_buffer, self.n_steps)
                if not continue_training:
                    break
                iteration += 1
                self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
                if log_interval is not None and iteration % log_interval == 0:
                    self.dump_logs(iteration)
                self.train()
            callback.on_training_end()
        return self

"""Deep Q-Network (Mnih et al., 2015) with SB3's arguments, on MLX.

The gradient step (Huber loss on the taken actions' Q-values against a target-network
bootstrap, gradient-norm clipping, optimizer update) is compiled once; see :func:`dqn_loss`.
The target network is copied (Polyak-averaged with ``tau``) every ``target_update_interval``
env steps, counted across envs as SB3 does. It does not change during ``train()``, so the
targets of all the minibatches of one compiled call come from one forward pass of it
(:func:`dqn_target_q`): the values of one pass per minibatch up to float rounding (bit-identical
in the configurations measured), at fewer and larger products.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from gymnasium import spaces
from mlx.utils import tree_map

from mlx_baselines3.common.compile import clip_by_global_norm
from mlx_baselines3.common.critics import module_optimizer
from mlx_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm, update_and_check
from mlx_baselines3.common.policies import BasePolicy
from mlx_baselines3.common.replay_buffer import ReplayBuffer
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import get_linear_fn, polyak_update
from mlx_baselines3.dqn.policies import CnnPolicy, DQNPolicy, MlpPolicy, MultiInputPolicy, QNetwork

SelfDQN = TypeVar("SelfDQN", bound="DQN")

__all__ = ["DQN", "dqn_loss", "dqn_target_q", "huber_loss"]


def huber_loss(prediction: mx.array, target: mx.array) -> mx.array:
    """Mean Huber loss with threshold 1 (PyTorch's ``smooth_l1_loss``)."""
    diff = mx.abs(prediction - target)
    return mx.mean(mx.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5))


def dqn_target_q(q_net_target: QNetwork, batch: tuple[Any, ...]) -> mx.array:
    """``r + (1 - done) * discount * max_a' Q_target(s', a')``, with no gradient.

    :param batch: ``(observations, actions, next_observations, dones, rewards, discounts)``, one
        minibatch (``dones`` ``[B, 1]``) or several stacked (``[steps, B, 1]``, observations
        ``[steps, B, ...]``): their next observations then go through the network as one batch
    :return: the targets, shaped as ``dones``
    """
    _, _, next_observations, dones, rewards, discounts = batch
    leading = dones.shape[:-1]
    rows = tree_map(lambda obs: obs.reshape(-1, *obs.shape[len(leading) :]), next_observations)
    next_q = mx.max(q_net_target(rows), axis=1, keepdims=True).reshape(*leading, 1)
    return mx.stop_gradient(rewards + (1.0 - dones) * discounts * next_q)


def dqn_loss(q_net: QNetwork, batch: tuple[Any, ...], target_q: mx.array) -> mx.array:
    """Huber loss between ``Q(s, a)`` of the taken actions and ``target_q`` (:func:`dqn_target_q`)."""
    observations, actions = batch[0], batch[1]
    current_q = mx.take_along_axis(q_net(observations), actions.astype(mx.int32), axis=1)
    return huber_loss(current_q, target_q)


class DQN(OffPolicyAlgorithm):
    """DQN. Arguments as in SB3.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class
    :param env: env, env id or VecEnv
    :param learning_rate: learning rate (float or schedule)
    :param buffer_size: replay buffer size
    :param learning_starts: random-action steps before learning
    :param batch_size: minibatch size
    :param tau: Polyak coefficient of the target update (1: hard copy)
    :param gamma: discount factor
    :param train_freq: train every ``train_freq`` steps or ``(n, "episode")``
    :param gradient_steps: gradient steps after each collection (-1: as many as env steps)
    :param replay_buffer_class: replay buffer class
    :param replay_buffer_kwargs: its keyword arguments
    :param optimize_memory_usage: memory-efficient replay buffer
    :param n_steps: n-step returns
    :param target_update_interval: env steps (across envs) between target-network updates
    :param exploration_fraction: fraction of training over which epsilon decays
    :param exploration_initial_eps: initial epsilon of epsilon-greedy exploration
    :param exploration_final_eps: final epsilon
    :param max_grad_norm: gradient-norm clipping threshold
    :param stats_window_size: episodes averaged in rollout statistics
    :param tensorboard_log: TensorBoard folder
    :param policy_kwargs: policy keyword arguments
    :param verbose: verbosity
    :param seed: seed
    :param device: ``"auto"``, ``"cpu"`` or ``"gpu"``
    :param _init_setup_model: build the networks now
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: DQNPolicy
    q_net: QNetwork
    q_net_target: QNetwork
    exploration_schedule: Schedule

    def __init__(
        self,
        policy: str | type[DQNPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        target_update_interval: int = 10000,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        max_grad_norm: float = 10,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: Any = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=None,  # No action noise
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Discrete,),
            support_multi_env=True,
        )
        if int(target_update_interval) < 1:
            raise ValueError(f"target_update_interval must be >= 1, got {target_update_interval}")
        for name, eps in (
            ("exploration_initial_eps", exploration_initial_eps),
            ("exploration_final_eps", exploration_final_eps),
        ):
            if not 0.0 <= eps <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {eps}")
        if max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        self.exploration_initial_eps = exploration_initial_eps
        self.exploration_final_eps = exploration_final_eps
        self.exploration_fraction = exploration_fraction
        self.target_update_interval = int(target_update_interval)
        # Number of calls to _on_step(), for the target-network updates
        self._n_calls = 0
        self.max_grad_norm = max_grad_norm
        # "epsilon" of epsilon-greedy exploration
        self.exploration_rate = 0.0
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._create_aliases()
        self.exploration_schedule = get_linear_fn(
            self.exploration_initial_eps,
            self.exploration_final_eps,
            self.exploration_fraction,
        )
        if self.n_envs > 1 and self.n_envs > self.target_update_interval:
            warnings.warn(
                "The number of environments used is greater than the target network "
                f"update interval ({self.n_envs} > {self.target_update_interval}), "
                "therefore the target network will be updated after each call to env.step() "
                f"which corresponds to {self.n_envs} steps.",
                stacklevel=2,
            )

    def _create_aliases(self) -> None:
        self.q_net = self.policy.q_net
        self.q_net_target = self.policy.q_net_target

    # ------------------------------------------------------------------ target network, exploration

    def _update_target(self) -> None:
        """Polyak update of the target network (a copy with the default ``tau=1``: the target then
        shares the online network's arrays, see :func:`polyak_update`)."""
        target = self.q_net_target
        target.update(polyak_update(self.q_net.parameters(), target.parameters(), self.tau))
        mx.eval(target.parameters())

    def _on_step(self) -> None:
        """Update the target network every ``target_update_interval`` env steps, and epsilon."""
        self._n_calls += 1
        # Each call to env.step() is n_envs transitions
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            self._update_target()
        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    # ------------------------------------------------------------------ the gradient step

    def _train_state(self) -> list[Any]:
        return [self.policy.state, module_optimizer(self.policy).state]

    def _gradient_step(
        self, batch: tuple[Any, ...], target_q: mx.array
    ) -> tuple[mx.array, mx.array, mx.array]:
        """One DQN update towards ``target_q``; returns the loss and whether the loss and the
        gradient norm were finite."""
        q_net, optimizer = self.policy.q_net, module_optimizer(self.policy)
        loss, grads = nn.value_and_grad(q_net, dqn_loss)(q_net, batch, target_q)
        # Clipped gradients, then a plain update: with the factor inside Adam's kernel instead
        # (scaled_update, as PPO/A2C do) the rounding differs when clipping applies, and the
        # CartPole learning benchmark's seed 1 ended at 316 instead of 500 (seeds 0/2: 482/500).
        grads, grad_norm = clip_by_global_norm(grads, self.max_grad_norm)
        update_and_check(q_net, optimizer, grads, loss, grad_norm)
        return loss, mx.isfinite(loss), mx.isfinite(grad_norm)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """Run ``gradient_steps`` DQN updates (the mean loss is read from the device once)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        outputs = self._run_gradient_steps(
            gradient_steps,
            batch_size,
            lambda batch, values, variant: self._gradient_step(batch, values["target_q"]),
            # The target network is fixed during train(): one pass for all of a call's minibatches
            per_chunk=lambda batches: {"target_q": dqn_target_q(self.policy.q_net_target, batches)},
        )
        self._n_updates += gradient_steps
        self._raise_if_not_finite(["loss", "grad_norm"], outputs[:, 1:3])
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(outputs[:, 0].mean()) if len(outputs) else float("nan"))

    # ------------------------------------------------------------------ acting

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Epsilon-greedy action (greedy when ``deterministic``), SB3's semantics: with probability
        ``exploration_rate`` the whole batch gets random actions."""
        if not deterministic and np.random.rand() < self.exploration_rate:
            if self.policy.is_vectorized_observation(observation):
                if isinstance(observation, dict):
                    n_batch = np.asarray(observation[next(iter(observation.keys()))]).shape[0]
                else:
                    n_batch = np.asarray(observation).shape[0]
                action = np.array([self.action_space.sample() for _ in range(n_batch)])
            else:
                action = np.array(self.action_space.sample())
        else:
            action, state = self.policy.predict(observation, state, episode_start, deterministic)
        return action, state

    def learn(
        self: SelfDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "DQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDQN:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _get_mlx_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy"], ["policy.optimizer"]

    def _get_extra_state(self) -> dict[str, np.ndarray]:
        # Counter of the target-update cadence: a resumed run keeps the same cadence
        return {"_n_calls": np.array(self._n_calls, dtype=np.int64)}

    def _set_extra_state(self, state: dict[str, np.ndarray]) -> None:
        unexpected = sorted(set(state) - {"_n_calls"})
        if unexpected:
            raise ValueError(f"DQN extra state has unexpected keys {unexpected}")
        if "_n_calls" in state:
            self._n_calls = int(np.asarray(state["_n_calls"]))

"""Twin Delayed DDPG (Fujimoto et al., 2018) with SB3's arguments, on MLX.

Two compiled steps: a critic-only step, and (every ``policy_delay`` updates) a step that also
updates the actor and Polyak-averages both target networks. See :func:`td3_critic_loss` and
:func:`td3_actor_loss`.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.critics import ContinuousCritic, module_optimizer
from mlx_baselines3.common.noise import ActionNoise
from mlx_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm, update_and_check
from mlx_baselines3.common.policies import BasePolicy
from mlx_baselines3.common.replay_buffer import ReplayBuffer
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import polyak_update
from mlx_baselines3.td3.policies import Actor, CnnPolicy, MlpPolicy, MultiInputPolicy, TD3Policy

SelfTD3 = TypeVar("SelfTD3", bound="TD3")

__all__ = ["TD3", "td3_actor_loss", "td3_critic_loss", "td3_target_q"]


def td3_target_q(
    policy: TD3Policy, batch: tuple[Any, ...], target_policy_noise: mx.array, target_noise_clip: mx.array
) -> mx.array:
    """Clipped double-Q target with target policy smoothing (no gradient flows through it).

    ``a' = clip(actor_target(s') + clip(N(0, sigma), -c, c), -1, 1)``,
    ``y = r + (1 - done) * discount * min_i Q'_i(s', a')``.
    """
    _, actions, next_obs, dones, rewards, discounts = batch
    noise = mx.random.normal(actions.shape) * target_policy_noise
    noise = mx.clip(noise, -target_noise_clip, target_noise_clip)
    next_actions = mx.clip(policy.actor_target(next_obs) + noise, -1.0, 1.0)
    next_q = mx.concatenate(list(policy.critic_target(next_obs, next_actions)), axis=1)
    next_q = mx.min(next_q, axis=1, keepdims=True)
    return mx.stop_gradient(rewards + (1.0 - dones) * discounts * next_q)


def td3_critic_loss(critic: nn.Module, observations: Any, actions: mx.array, target_q: mx.array) -> mx.array:
    """``sum_i mean((Q_i(s, a) - target)^2)``."""
    return sum(mx.mean(mx.square(q - target_q)) for q in critic(observations, actions))  # type: ignore[return-value]


def td3_actor_loss(actor: nn.Module, critic: ContinuousCritic, observations: Any) -> mx.array:
    """``-mean(Q_1(s, actor(s)))``."""
    return -mx.mean(critic.q1_forward(observations, actor(observations)))


class TD3(OffPolicyAlgorithm):
    """TD3. Arguments as in SB3.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class
    :param env: env, env id or VecEnv
    :param learning_rate: learning rate (float or schedule)
    :param buffer_size: replay buffer size
    :param learning_starts: random-action steps before learning
    :param batch_size: minibatch size
    :param tau: Polyak coefficient of the targets
    :param gamma: discount factor
    :param train_freq: train every ``train_freq`` steps or ``(n, "episode")``
    :param gradient_steps: gradient steps after each collection (-1: as many as env steps)
    :param action_noise: exploration noise
    :param replay_buffer_class: replay buffer class
    :param replay_buffer_kwargs: its keyword arguments
    :param optimize_memory_usage: memory-efficient replay buffer
    :param n_steps: n-step returns
    :param policy_delay: the actor and targets are updated every ``policy_delay`` critic updates
    :param target_policy_noise: std of the smoothing noise on target actions
    :param target_noise_clip: clip of that noise
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
    policy: TD3Policy
    actor: Actor
    actor_target: Actor
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    def __init__(
        self,
        policy: str | type[TD3Policy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
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
            action_noise=action_noise,
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
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        if int(policy_delay) < 1:
            raise ValueError(f"policy_delay must be >= 1, got {policy_delay}")
        if target_policy_noise < 0 or target_noise_clip < 0:
            raise ValueError(
                f"target_policy_noise and target_noise_clip must be >= 0, got {target_policy_noise}, "
                f"{target_noise_clip}"
            )
        self.policy_delay = int(policy_delay)
        self.target_noise_clip = target_noise_clip
        self.target_policy_noise = target_policy_noise
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._create_aliases()

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    # ------------------------------------------------------------------ the gradient steps

    def _train_state(self) -> list[Any]:
        return [
            self.policy.state,
            module_optimizer(self.actor).state,
            module_optimizer(self.critic).state,
            mx.random.state,
        ]

    def _critic_step(
        self, batch: tuple[Any, ...], hyper: tuple[mx.array, mx.array]
    ) -> tuple[mx.array, mx.array]:
        """Critic update; returns the loss and whether it was finite."""
        policy = self.policy
        critic = policy.critic
        target_q = td3_target_q(policy, batch, *hyper)
        loss, grads = nn.value_and_grad(critic, td3_critic_loss)(critic, batch[0], batch[1], target_q)
        if policy.share_features_extractor:
            grads = dict(grads)
            grads.pop("features_extractor", None)
        finite = update_and_check(critic, module_optimizer(critic), grads, loss)
        return loss, finite

    def _full_step(
        self, batch: tuple[Any, ...], hyper: tuple[mx.array, mx.array], tau: mx.array
    ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """Critic, actor and Polyak target updates; returns both losses and whether they were finite."""
        critic_loss, critic_ok = self._critic_step(batch, hyper)
        policy = self.policy
        actor, critic = policy.actor, policy.critic
        actor_loss, grads = nn.value_and_grad(actor, td3_actor_loss)(actor, critic, batch[0])
        actor_ok = update_and_check(actor, module_optimizer(actor), grads, actor_loss)
        for online, target in ((critic, policy.critic_target), (actor, policy.actor_target)):
            target.update(polyak_update(online.parameters(), target.parameters(), tau))
        return critic_loss, actor_loss, critic_ok, actor_ok

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """Run ``gradient_steps`` TD3 updates (metrics are read from the device once, at the end)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate([module_optimizer(self.actor), module_optimizer(self.critic)])
        per_step = {
            "noise": np.full(gradient_steps, self.target_policy_noise),
            "clip": np.full(gradient_steps, self.target_noise_clip),
            "tau": np.full(gradient_steps, self.tau),
        }
        first_update = self._n_updates

        def step(batch: tuple[Any, ...], values: dict[str, mx.array], full: bool) -> tuple[mx.array, ...]:
            hyper = (values["noise"], values["clip"])
            if full:  # SB3: the actor and the targets are updated every policy_delay-th update
                return self._full_step(batch, hyper, values["tau"])
            critic_loss, critic_ok = self._critic_step(batch, hyper)
            return critic_loss, mx.array(float("nan")), critic_ok, mx.array(True)

        outputs = self._run_gradient_steps(
            gradient_steps,
            batch_size,
            step,
            per_step,
            variant_of=lambda index: (first_update + index + 1) % self.policy_delay == 0,
        )
        self._n_updates += gradient_steps
        self._raise_if_not_finite(["critic_loss", "actor_loss"], outputs[:, 2:4])
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        actor_losses = outputs[~np.isnan(outputs[:, 1]), 1] if len(outputs) else np.zeros(0)
        if len(actor_losses):
            self.logger.record("train/actor_loss", float(actor_losses.mean()))
        self.logger.record("train/critic_loss", float(outputs[:, 0].mean()) if len(outputs) else float("nan"))

    def learn(
        self: SelfTD3,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "TD3",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTD3:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _get_mlx_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy"], ["actor.optimizer", "critic.optimizer"]

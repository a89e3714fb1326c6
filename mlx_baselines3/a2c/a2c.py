"""Advantage Actor-Critic (synchronous A3C), sharing the on-policy machinery with PPO."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, TypeVar

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from mlx_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from mlx_baselines3.common.rollout_buffer import RolloutBuffer
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import explained_variance
from mlx_baselines3.ppo.ppo import normalize_advantages

SelfA2C = TypeVar("SelfA2C", bound="A2C")

A2C_LOSS_TERMS = ("policy_loss", "value_loss", "entropy_loss")


def a2c_loss(
    policy: ActorCriticPolicy,
    batch: dict[str, Any],
    hyper: dict[str, mx.array],
    normalize_advantage: bool = False,
) -> tuple[mx.array, tuple[mx.array, ...]]:
    """A2C's loss: ``-(A * log pi(a|s)).mean() + ent_coef * entropy_loss + vf_coef * value_loss``.

    ``value_loss`` is the policy's (:meth:`ActorCriticPolicy.evaluate_actions_and_value_loss`):
    ``MSE(returns, V)`` for the default critic, the two-hot loss for ``value_head="twohot"``.

    :return: the total loss and ``(policy_loss, value_loss, entropy_loss)``
    """
    actions = batch["actions"]
    if isinstance(policy.action_space, spaces.Discrete):
        actions = actions.reshape(-1).astype(mx.int32)
    value_loss, log_prob, entropy = policy.evaluate_actions_and_value_loss(
        batch["observations"], actions, batch["returns"]
    )
    advantages = batch["advantages"]
    if normalize_advantage and advantages.shape[0] > 1:
        advantages = normalize_advantages(advantages)
    policy_loss = -(advantages * log_prob).mean()
    entropy_loss = -(-log_prob).mean() if entropy is None else -entropy.mean()
    loss = policy_loss + hyper["ent_coef"] * entropy_loss + hyper["vf_coef"] * value_loss
    return loss, (policy_loss, value_loss, entropy_loss)


class A2C(OnPolicyAlgorithm):
    """Advantage Actor-Critic, SB3's arguments and defaults (RMSprop with alpha 0.99, eps 1e-5).

    Paper: https://arxiv.org/abs/1602.01783

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class
    :param env: env, env id or VecEnv
    :param learning_rate: float or schedule
    :param n_steps: steps per env per update
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (1.0: classic advantage)
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient clipping
    :param rms_prop_eps: RMSprop epsilon
    :param use_rms_prop: RMSprop (default) or Adam
    :param use_sde: gSDE (not supported)
    :param sde_sample_freq: gSDE option
    :param rollout_buffer_class: rollout buffer class
    :param rollout_buffer_kwargs: its keyword arguments
    :param normalize_advantage: normalise advantages
    :param stats_window_size: episodes averaged in the rollout statistics
    :param tensorboard_log: TensorBoard folder
    :param policy_kwargs: policy keyword arguments
    :param verbose: 0, 1 or 2
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"`` or ``"gpu"``
    :param _init_setup_model: build the networks now
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    loss_term_names = A2C_LOSS_TERMS

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = False,
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
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.normalize_advantage = normalize_advantage
        if use_rms_prop and "optimizer_class" not in self.policy_kwargs:
            self.policy_kwargs["optimizer_class"] = optim.RMSprop
            self.policy_kwargs["optimizer_kwargs"] = dict(alpha=0.99, eps=rms_prop_eps)
        if _init_setup_model:
            self._setup_model()

    def _loss_config(self) -> tuple[Any, tuple[Any, ...]]:
        loss_fn = partial(a2c_loss, normalize_advantage=self.normalize_advantage)
        return loss_fn, (bool(self.normalize_advantage),)

    def train(self) -> None:
        """One gradient step on the whole rollout."""
        self.policy.set_training_mode(True)
        assert self.policy.optimizer is not None
        self._update_learning_rate(self.policy.optimizer)
        hyper = self._update_hyperparameters()
        total = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        result = self._run_update_epochs(self._get_update_step(), 1, total, hyper)
        self._n_updates += 1
        terms = result["terms"][-1]
        explained_var = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", float(terms[2]))
        self.logger.record("train/policy_loss", float(terms[0]))
        self.logger.record("train/value_loss", float(terms[1]))
        self.logger.record("train/grad_norm", float(np.mean(result["grad_norms"])))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", float(np.array(mx.exp(self.policy.log_std)).mean()))

    def learn(
        self: SelfA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "A2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfA2C:
        """Train for ``total_timesteps`` env steps (SB3's signature)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

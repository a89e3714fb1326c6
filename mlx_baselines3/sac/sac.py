"""Soft Actor-Critic (Haarnoja et al., 2018) with SB3's arguments, on MLX.

One gradient step (entropy coefficient, critics, actor, target critics) is a single function of
the parameter trees, compiled once; see :func:`sac_critic_loss`, :func:`sac_actor_loss` and
:func:`sac_ent_coef_loss` for the losses. Metrics are read back once per ``train`` call.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.critics import module_optimizer
from mlx_baselines3.common.noise import ActionNoise
from mlx_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm, update_and_check
from mlx_baselines3.common.policies import BasePolicy, make_optimizer
from mlx_baselines3.common.replay_buffer import ReplayBuffer
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import polyak_update
from mlx_baselines3.sac.policies import Actor, CnnPolicy, MlpPolicy, MultiInputPolicy, SACPolicy

SelfSAC = TypeVar("SelfSAC", bound="SAC")

__all__ = ["SAC", "LogEntCoef", "sac_actor_loss", "sac_critic_loss", "sac_ent_coef_loss", "sac_target_q"]


class LogEntCoef(nn.Module):
    """Holds the trainable ``log(ent_coef)`` (a module so it has its own parameter tree and optimizer).

    :param init_value: initial entropy coefficient (> 0)
    """

    def __init__(self, init_value: float) -> None:
        super().__init__()
        if not init_value > 0.0:
            raise ValueError(f"The initial value of ent_coef must be greater than 0, got {init_value}")
        self.log_ent_coef = mx.array([math.log(init_value)], dtype=mx.float32)

    def __call__(self) -> mx.array:
        return self.log_ent_coef


def sac_target_q(
    policy: SACPolicy, batch: tuple[Any, ...], ent_coef: mx.array, next_noise: mx.array
) -> mx.array:
    """Soft Bellman target ``r + (1 - done) * discount * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))``.

    No gradient flows through it. ``next_noise`` is the standard-normal noise of ``a' ~ pi(.|s')``.
    """
    _, _, next_obs, dones, rewards, discounts = batch
    next_actions, next_log_prob = policy.actor.action_log_prob_from_noise(next_obs, next_noise)
    next_q = mx.concatenate(list(policy.critic_target(next_obs, next_actions)), axis=1)
    next_q = mx.min(next_q, axis=1, keepdims=True) - ent_coef * next_log_prob.reshape(-1, 1)
    return mx.stop_gradient(rewards + (1.0 - dones) * discounts * next_q)


def sac_critic_loss(critic: nn.Module, observations: Any, actions: mx.array, target_q: mx.array) -> mx.array:
    """``0.5 * sum_i mean((Q_i(s, a) - target)^2)``."""
    current_q = critic(observations, actions)
    return 0.5 * sum(mx.mean(mx.square(q - target_q)) for q in current_q)  # type: ignore[return-value]


def sac_actor_loss(
    actor: Actor, critic: nn.Module, observations: Any, noise: mx.array, ent_coef: mx.array
) -> tuple[mx.array, mx.array]:
    """``mean(alpha * log pi(a|s) - min_i Q_i(s, a))`` with ``a = tanh(mu + std * noise)``.

    :return: the loss and the (gradient-free) log-probabilities ``[B, 1]``
    """
    actions_pi, log_prob = actor.action_log_prob_from_noise(observations, noise)
    log_prob = log_prob.reshape(-1, 1)
    q_values_pi = mx.concatenate(list(critic(observations, actions_pi)), axis=1)
    min_qf_pi = mx.min(q_values_pi, axis=1, keepdims=True)
    return mx.mean(ent_coef * log_prob - min_qf_pi), mx.stop_gradient(log_prob)


def sac_ent_coef_loss(ent_module: LogEntCoef, log_prob: mx.array, target_entropy: mx.array) -> mx.array:
    """``-mean(log_alpha * (log pi + target_entropy))`` (log-probs treated as constants)."""
    return -mx.mean(ent_module.log_ent_coef * mx.stop_gradient(log_prob + target_entropy))


class SAC(OffPolicyAlgorithm):
    """Soft Actor-Critic. Arguments as in SB3 (``use_sde`` is not supported).

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class
    :param env: env, env id or VecEnv
    :param learning_rate: learning rate (float or schedule) of the actor, critic and entropy coefficient
    :param buffer_size: replay buffer size
    :param learning_starts: random-action steps before learning
    :param batch_size: minibatch size
    :param tau: Polyak coefficient of the target critic
    :param gamma: discount factor
    :param train_freq: train every ``train_freq`` steps or ``(n, "episode")``
    :param gradient_steps: gradient steps after each collection (-1: as many as env steps)
    :param action_noise: extra exploration noise
    :param replay_buffer_class: replay buffer class
    :param replay_buffer_kwargs: its keyword arguments
    :param optimize_memory_usage: memory-efficient replay buffer
    :param n_steps: n-step returns
    :param ent_coef: ``"auto"`` (learned, starting at 1), ``"auto_<init>"`` or a fixed float
    :param target_update_interval: update the target critic every this many gradient steps
    :param target_entropy: ``"auto"`` (``-dim(A)``) or a float
    :param use_sde: gSDE (not supported)
    :param sde_sample_freq: gSDE option
    :param use_sde_at_warmup: gSDE option
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
    policy: SACPolicy
    actor: Actor
    critic: Any
    critic_target: Any

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 3e-4,
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
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
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
            action_noise,
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
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            support_multi_env=True,
            supported_action_spaces=(spaces.Box,),
        )
        if int(target_update_interval) < 1:
            raise ValueError(f"target_update_interval must be >= 1, got {target_update_interval}")
        self.target_entropy = target_entropy
        self.log_ent_coef_module: LogEntCoef | None = None
        self.ent_coef = ent_coef
        self.target_update_interval = int(target_update_interval)
        self.ent_coef_optimizer: optim.Optimizer | None = None
        self.ent_coef_tensor: mx.array | None = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._create_aliases()
        if self.target_entropy == "auto":
            self.target_entropy = float(-np.prod(self.action_space.shape).astype(np.float32))  # type: ignore[arg-type]
        else:
            self.target_entropy = float(self.target_entropy)
        if isinstance(self.ent_coef, str):
            if not self.ent_coef.startswith("auto"):
                raise ValueError(f"ent_coef must be 'auto', 'auto_<init>' or a float, got {self.ent_coef!r}")
            init_value = 1.0
            if "_" in self.ent_coef:
                try:
                    init_value = float(self.ent_coef.split("_")[1])
                except ValueError as error:
                    raise ValueError(
                        f"Cannot read the initial value of ent_coef={self.ent_coef!r}"
                    ) from error
            self.log_ent_coef_module = LogEntCoef(init_value)
            # Plain Adam (PyTorch defaults), as SB3 uses for the entropy coefficient
            self.ent_coef_optimizer = make_optimizer(optim.Adam, self.lr_schedule(1), None)
            self.ent_coef_optimizer.init(self.log_ent_coef_module.trainable_parameters())
            self.ent_coef_tensor = None
        else:
            self.ent_coef_tensor = mx.array(float(self.ent_coef), dtype=mx.float32)
            self.log_ent_coef_module = None
            self.ent_coef_optimizer = None

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    @property
    def log_ent_coef(self) -> mx.array | None:
        """``log(ent_coef)`` when it is learned (SB3's attribute), else None."""
        return None if self.log_ent_coef_module is None else self.log_ent_coef_module.log_ent_coef

    # ------------------------------------------------------------------ the gradient step

    def _train_state(self) -> list[Any]:
        state: list[Any] = [
            self.policy.state,
            module_optimizer(self.actor).state,
            module_optimizer(self.critic).state,
            mx.random.state,
        ]
        if self.log_ent_coef_module is not None:
            assert self.ent_coef_optimizer is not None
            state += [self.log_ent_coef_module.state, self.ent_coef_optimizer.state]
        return state

    def _gradient_step(
        self, batch: tuple[Any, ...], tau: mx.array, target_entropy: mx.array
    ) -> tuple[tuple[mx.array, ...], tuple[mx.array, ...]]:
        """One SAC update; ``tau`` is 0 on steps without a target update.

        :return: the metrics ``(ent_coef, ent_coef_loss, critic_loss, actor_loss)`` and whether
            ``(critic_loss, actor_loss, ent_coef_loss)`` were finite. A non-finite loss skips its
            update and every later one of the ``train()`` call.
        """
        policy = self.policy
        actor, critic = policy.actor, policy.critic
        obs, actions = batch[0], batch[1]
        noise = mx.random.normal(actions.shape)
        next_noise = mx.random.normal(actions.shape)
        if self.log_ent_coef_module is not None:
            ent_coef = mx.exp(mx.stop_gradient(self.log_ent_coef_module.log_ent_coef))
        else:
            assert self.ent_coef_tensor is not None
            ent_coef = self.ent_coef_tensor
        ent_coef = ent_coef.reshape(())

        # Critic
        target_q = sac_target_q(policy, batch, ent_coef, next_noise)
        critic_loss, critic_grads = nn.value_and_grad(critic, sac_critic_loss)(critic, obs, actions, target_q)
        critic_grads = _drop_shared_extractor(critic_grads, policy.share_features_extractor)
        critic_ok = update_and_check(critic, module_optimizer(critic), critic_grads, critic_loss)

        # Actor (with the updated critic, as SB3)
        (actor_loss, log_prob), actor_grads = nn.value_and_grad(actor, sac_actor_loss)(
            actor, critic, obs, noise, ent_coef
        )
        actor_ok = update_and_check(actor, module_optimizer(actor), actor_grads, actor_loss)

        # Entropy coefficient
        if self.log_ent_coef_module is not None:
            assert self.ent_coef_optimizer is not None
            ent_module = self.log_ent_coef_module
            ent_coef_loss, ent_grads = nn.value_and_grad(ent_module, sac_ent_coef_loss)(
                ent_module, log_prob, target_entropy
            )
            ent_ok = update_and_check(ent_module, self.ent_coef_optimizer, ent_grads, ent_coef_loss)
        else:
            ent_coef_loss, ent_ok = mx.array(0.0), mx.array(True)

        # Target critic: Polyak average (tau = 0 leaves it unchanged)
        target = policy.critic_target
        target.update(polyak_update(critic.parameters(), target.parameters(), tau))
        return (ent_coef, ent_coef_loss, critic_loss, actor_loss), (critic_ok, actor_ok, ent_ok)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """Run ``gradient_steps`` SAC updates (metrics are read from the device once, at the end)."""
        self.policy.set_training_mode(True)
        optimizers = [module_optimizer(self.actor), module_optimizer(self.critic)]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        steps = np.arange(gradient_steps)
        per_step = {
            # SB3 updates the target critic when gradient_step % target_update_interval == 0
            "tau": np.where(steps % self.target_update_interval == 0, self.tau, 0.0),
            "target_entropy": np.full(gradient_steps, float(self.target_entropy)),
        }

        def step(batch: tuple[Any, ...], values: dict[str, mx.array], variant: Any) -> tuple[mx.array, ...]:
            metrics, finite = self._gradient_step(batch, values["tau"], values["target_entropy"])
            return (*metrics, *finite)

        outputs = self._run_gradient_steps(gradient_steps, batch_size, step, per_step)
        self._n_updates += gradient_steps
        self._raise_if_not_finite(["critic_loss", "actor_loss", "ent_coef_loss"], outputs[:, 4:7])
        names = ["ent_coef", "ent_coef_loss", "critic_loss", "actor_loss"]
        metrics = {name: float(outputs[:, i].mean()) for i, name in enumerate(names)} if len(outputs) else {}
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", metrics.get("ent_coef", float("nan")))
        self.logger.record("train/actor_loss", metrics.get("actor_loss", float("nan")))
        self.logger.record("train/critic_loss", metrics.get("critic_loss", float("nan")))
        if self.ent_coef_optimizer is not None:
            self.logger.record("train/ent_coef_loss", metrics.get("ent_coef_loss", float("nan")))

    def learn(
        self: SelfSAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _get_mlx_save_params(self) -> tuple[list[str], list[str]]:
        modules = ["policy"]
        optimizers = ["actor.optimizer", "critic.optimizer"]
        if self.ent_coef_optimizer is not None:
            modules.append("log_ent_coef_module")
            optimizers.append("ent_coef_optimizer")
        return modules, optimizers


def _drop_shared_extractor(grads: dict[str, Any], shared: bool) -> dict[str, Any]:
    """Remove the shared features extractor from a critic's gradients (its optimizer skips it)."""
    if shared:
        grads = dict(grads)
        grads.pop("features_extractor", None)
    return grads

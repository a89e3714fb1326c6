"""Proximal Policy Optimization (clip version), with a compiled MLX update."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, ClassVar, TypeVar

import mlx.core as mx
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from mlx_baselines3.common.policies import (
    TWOHOT_CLIP_VF_ERROR,
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from mlx_baselines3.common.rollout_buffer import RolloutBuffer
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.common.utils import FloatSchedule, explained_variance

SelfPPO = TypeVar("SelfPPO", bound="PPO")

PPO_LOSS_TERMS = ("policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction")


def normalize_advantages(advantages: mx.array) -> mx.array:
    """``(A - mean) / (std + 1e-8)`` with the unbiased std (as ``torch.std``); needs at least 2 entries."""
    n = advantages.shape[0]
    mean = advantages.mean()
    var = ((advantages - mean) ** 2).sum() / (n - 1)
    return (advantages - mean) / (mx.sqrt(var) + 1e-8)


def ppo_loss(
    policy: ActorCriticPolicy,
    batch: dict[str, Any],
    hyper: dict[str, mx.array],
    normalize_advantage: bool = True,
    clip_value: bool = False,
) -> tuple[mx.array, tuple[mx.array, ...]]:
    """PPO's clipped surrogate loss, value loss and entropy bonus (a pure function of the policy).

    The value loss is the policy's (:meth:`ActorCriticPolicy.evaluate_actions_and_value_loss`): the
    mean squared error for the default critic, the two-hot loss for ``value_head="twohot"``.

    :param policy: the actor-critic
    :param batch: ``observations``, ``actions``, ``old_values``, ``old_log_prob``, ``advantages``, ``returns``
    :param hyper: ``clip_range``, ``clip_range_vf`` (used when ``clip_value``), ``ent_coef``, ``vf_coef``
    :param normalize_advantage: normalise advantages within the minibatch (skipped for a batch of 1)
    :param clip_value: clip the value prediction around the old value by ``clip_range_vf``
    :return: the total loss and ``(policy_gradient_loss, value_loss, entropy_loss, approx_kl, clip_fraction)``
    """
    actions = batch["actions"]
    if isinstance(policy.action_space, spaces.Discrete):
        actions = actions.reshape(-1).astype(mx.int32)
    value_loss, log_prob, entropy = policy.evaluate_actions_and_value_loss(
        batch["observations"],
        actions,
        batch["returns"],
        old_values=batch["old_values"] if clip_value else None,
        clip_range_vf=hyper["clip_range_vf"] if clip_value else None,
    )
    advantages = batch["advantages"]
    if normalize_advantage and advantages.shape[0] > 1:
        advantages = normalize_advantages(advantages)
    clip_range = hyper["clip_range"]
    log_ratio = log_prob - batch["old_log_prob"]
    ratio = mx.exp(log_ratio)
    policy_loss_1 = advantages * ratio
    policy_loss_2 = advantages * mx.clip(ratio, 1 - clip_range, 1 + clip_range)
    policy_loss = -mx.minimum(policy_loss_1, policy_loss_2).mean()
    clip_fraction = (mx.abs(ratio - 1) > clip_range).astype(mx.float32).mean()
    if entropy is None:
        entropy_loss = -(-log_prob).mean()
    else:
        entropy_loss = -entropy.mean()
    loss = policy_loss + hyper["ent_coef"] * entropy_loss + hyper["vf_coef"] * value_loss
    approx_kl = mx.stop_gradient(((ratio - 1) - log_ratio).mean())
    return loss, (policy_loss, value_loss, entropy_loss, approx_kl, mx.stop_gradient(clip_fraction))


class PPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization (clip version), SB3's arguments and defaults.

    Paper: https://arxiv.org/abs/1707.06347

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class
    :param env: env, env id or VecEnv
    :param learning_rate: float or schedule of ``progress_remaining``
    :param n_steps: steps per env per update (rollout size ``n_steps * n_envs``)
    :param batch_size: minibatch size
    :param n_epochs: passes over the rollout per update
    :param gamma: discount factor
    :param gae_lambda: GAE lambda
    :param clip_range: clipping parameter (float or schedule)
    :param clip_range_vf: value clipping (None: no clipping; float or schedule); depends on reward scale
    :param normalize_advantage: normalise advantages per minibatch
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient clipping (global norm)
    :param use_sde: gSDE (not supported)
    :param sde_sample_freq: gSDE option
    :param rollout_buffer_class: rollout buffer class
    :param rollout_buffer_kwargs: its keyword arguments
    :param target_kl: stop the epochs of an update once the approximate KL exceeds ``1.5 * target_kl``
    :param stats_window_size: episodes averaged in the rollout statistics
    :param tensorboard_log: TensorBoard folder
    :param policy_kwargs: policy keyword arguments
    :param verbose: 0, 1 or 2
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"`` or ``"gpu"``
    :param _init_setup_model: build the networks now

    The update is one compiled MLX function per minibatch shape. When ``n_steps * n_envs`` is not a
    multiple of ``batch_size`` the last minibatch of each epoch is smaller, as in SB3 (compiled once
    more for that shape). A non-finite loss term raises ``NonFiniteLossError`` naming the term, and
    that update (the whole ``train()`` call) is undone, so the model stays usable.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }
    loss_term_names = PPO_LOSS_TERMS

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: None | float | Schedule = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
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
        if normalize_advantage and batch_size <= 1:
            raise ValueError(
                "`batch_size` must be greater than 1 when normalize_advantage=True "
                "(the advantage std of a single sample is undefined)"
            )
        if self.env is not None:
            buffer_size = self.env.num_envs * n_steps
            if normalize_advantage and buffer_size <= 1:
                raise ValueError(f"`n_steps * n_envs` must be greater than 1. Currently n_steps={n_steps}")
            untruncated_batches = buffer_size // batch_size
            if buffer_size % batch_size > 0:
                warnings.warn(
                    f"You have specified a mini-batch size of {batch_size}, but because the `RolloutBuffer` is of "
                    f"size `n_steps * n_envs = {buffer_size}`, after every {untruncated_batches} untruncated "
                    f"mini-batches, there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
                    f"We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
                    f"Info: (n_steps={n_steps} and n_envs={self.env.num_envs})",
                    stacklevel=2,
                )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        # Schedules of progress_remaining, as in SB3 (a float or a callable may be assigned later too)
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError("`clip_range_vf` must be positive, pass `None` to deactivate vf clipping")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        if self.clip_range_vf is not None and getattr(self.policy, "value_head", "mse") == "twohot":
            raise ValueError(TWOHOT_CLIP_VF_ERROR)

    def _loss_config(self) -> tuple[Any, tuple[Any, ...]]:
        clip_value = self.clip_range_vf is not None
        loss_fn = partial(ppo_loss, normalize_advantage=self.normalize_advantage, clip_value=clip_value)
        return loss_fn, (bool(self.normalize_advantage), clip_value)

    def train(self) -> None:
        """Update the policy with ``n_epochs`` passes of minibatch gradient steps over the rollout."""
        self.policy.set_training_mode(True)
        assert self.policy.optimizer is not None
        self._update_learning_rate(self.policy.optimizer)
        clip_range = FloatSchedule(self.clip_range)(self._current_progress_remaining)
        hyper = self._update_hyperparameters()
        hyper["clip_range"] = mx.array(clip_range, dtype=mx.float32)
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = FloatSchedule(self.clip_range_vf)(self._current_progress_remaining)
            hyper["clip_range_vf"] = mx.array(clip_range_vf, dtype=mx.float32)

        result = self._run_update_epochs(self._get_update_step(), self.n_epochs, self.batch_size, hyper)
        self._n_updates += result["epochs"]
        terms = result["terms"]
        names = {name: i for i, name in enumerate(PPO_LOSS_TERMS)}
        last_epoch = result["epoch"] == result["epoch"][-1]
        if result["stopped"] and self.verbose >= 1:
            print(
                f"Early stopping at step {result['epochs'] - 1} due to reaching max kl: "
                f"{terms[-1, names['approx_kl']]:.2f}"
            )
        explained_var = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )
        self.logger.record("train/entropy_loss", float(np.mean(terms[:, names["entropy_loss"]])))
        self.logger.record("train/policy_gradient_loss", float(np.mean(terms[:, names["policy_gradient_loss"]])))
        self.logger.record("train/value_loss", float(np.mean(terms[:, names["value_loss"]])))
        self.logger.record("train/approx_kl", float(np.mean(terms[last_epoch, names["approx_kl"]])))
        self.logger.record("train/clip_fraction", float(np.mean(terms[:, names["clip_fraction"]])))
        self.logger.record("train/loss", float(result["losses"][-1]))
        self.logger.record("train/grad_norm", float(np.mean(result["grad_norms"])))
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", float(np.array(mx.exp(self.policy.log_std)).mean()))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def learn(
        self: SelfPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPO:
        """Train for ``total_timesteps`` env steps (SB3's signature)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

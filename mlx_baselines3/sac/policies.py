"""SAC policies: a squashed-Gaussian actor, twin Q critics and a target critic (MLX modules).

The target critic is a frozen child module: its arrays are in ``policy.parameters()`` (and so in
saves and in the compiled step's state) but not in ``trainable_parameters()``; it only moves by
Polyak averaging.

gSDE (``use_sde=True``) is not implemented: it raises ``NotImplementedError``.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.critics import ContinuousCritic, get_actor_critic_arch, make_module_optimizer
from mlx_baselines3.common.distributions import SquashedDiagGaussianDistribution
from mlx_baselines3.common.layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    Mlp,
    NatureCNN,
    create_mlp,
)
from mlx_baselines3.common.numpy_inference import flat_box_features, numpy_replica
from mlx_baselines3.common.policies import BasePolicy, with_features_extractor
from mlx_baselines3.common.preprocessing import get_action_dim
from mlx_baselines3.common.type_aliases import Schedule

# Clipping range of the actor's log standard deviation (as SB3)
LOG_STD_MAX = 2
LOG_STD_MIN = -20

__all__ = ["Actor", "SACPolicy", "MlpPolicy", "CnnPolicy", "MultiInputPolicy", "LOG_STD_MIN", "LOG_STD_MAX"]


def _no_sde(use_sde: bool) -> None:
    if use_sde:
        raise NotImplementedError("gSDE (use_sde=True) is not implemented in mlx_baselines3's SAC")


class Actor(BasePolicy):
    """Squashed-Gaussian actor: ``tanh(mu + std * eps)`` with a state-dependent log std.

    :param observation_space: observation space
    :param action_space: a Box action space
    :param net_arch: hidden layer sizes
    :param features_extractor: features extractor
    :param features_dim: number of features
    :param activation_fn: activation class
    :param use_sde: gSDE (not implemented, must be False)
    :param log_std_init: gSDE option (unused)
    :param full_std: gSDE option (unused)
    :param use_expln: gSDE option (unused)
    :param clip_mean: gSDE option (unused)
    :param normalize_images: scale uint8 images to [0, 1]
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        full_std: bool = True,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        normalize_images: bool = True,
    ) -> None:
        _no_sde(use_sde)
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        action_dim = get_action_dim(action_space)
        self._set_config(
            net_arch=list(net_arch),
            features_dim=features_dim,
            activation_fn=activation_fn,
            use_sde=use_sde,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            clip_mean=clip_mean,
            action_dist=SquashedDiagGaussianDistribution(action_dim),
        )
        self.latent_pi = Mlp(*create_mlp(features_dim, -1, list(net_arch), activation_fn))
        last_layer_dim = net_arch[-1] if len(net_arch) > 0 else features_dim
        self.mu = nn.Linear(last_layer_dim, action_dim)
        self.log_std = nn.Linear(last_layer_dim, action_dim)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                use_sde=self.use_sde,
                log_std_init=self.log_std_init,
                full_std=self.full_std,
                use_expln=self.use_expln,
                features_extractor=self.features_extractor,
                clip_mean=self.clip_mean,
            )
        )
        return data

    def get_action_dist_params(self, obs: Any) -> tuple[mx.array, mx.array, dict[str, mx.array]]:
        """Mean and clipped log std of the Gaussian before ``tanh`` (and SB3's empty kwargs)."""
        features = self.extract_features(obs, self.features_extractor)
        latent_pi = self.latent_pi(features)
        mean_actions = self.mu(latent_pi)
        log_std = mx.clip(self.log_std(latent_pi), LOG_STD_MIN, LOG_STD_MAX)
        return mean_actions, log_std, {}

    def __call__(self, obs: Any, deterministic: bool = False) -> mx.array:
        """Actions in [-1, 1] (sampled, or ``tanh(mean)`` when deterministic)."""
        mean_actions, log_std, _ = self.get_action_dist_params(obs)
        return self.action_dist.actions_from_params(mean_actions, log_std, deterministic=deterministic)

    def forward(self, obs: Any, deterministic: bool = False) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(obs, deterministic)

    def action_log_prob(self, obs: Any) -> tuple[mx.array, mx.array]:
        """Sampled actions and their log-probabilities ``[B]``."""
        mean_actions, log_std, _ = self.get_action_dist_params(obs)
        return self.action_dist.log_prob_from_params(mean_actions, log_std)

    def action_log_prob_from_noise(self, obs: Any, noise: mx.array) -> tuple[mx.array, mx.array]:
        """Reparameterised sample ``tanh(mean + std * noise)`` and its log-probability ``[B]``.

        With the noise drawn outside, the same sample can be re-evaluated under different
        parameters (used by the SAC losses).
        """
        mean_actions, log_std, _ = self.get_action_dist_params(obs)
        gaussian_actions = mean_actions + mx.exp(log_std) * noise
        actions = mx.tanh(gaussian_actions)
        distribution = self.action_dist.proba_distribution(mean_actions, log_std)
        return actions, distribution.log_prob(actions, gaussian_actions)

    def _predict(self, observation: Any, deterministic: bool = False) -> mx.array:
        return self(observation, deterministic)

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        """``tanh(mean)`` from NumPy copies of the MLP and the mean head, on flat Box observations
        (~22 us for one observation against ~80 us for an MLX call on the CPU: evaluation).

        Sampled actions (training) stay on the MLX path: SAC updates the actor after every env
        step, and re-copying its weights for NumPy then cost more than the MLX call saved
        (260-300 us against 230 us per action right after a gradient step). With the weights read
        in place (:func:`~mlx_baselines3.common.numpy_inference.host_view`) a NumPy sample took
        136-144 us against 156-158 us, and whole SAC steps showed no difference beyond noise, so
        the sampling keeps MLX's random stream.
        """
        if not deterministic:
            return None
        features = flat_box_features(self, observation)
        latent_pi, mu = (numpy_replica(self, name) for name in ("latent_pi", "mu"))
        if features is None or latent_pi is None or mu is None:
            return None
        return np.tanh(mu(latent_pi(features)))


class SACPolicy(BasePolicy):
    """Policy of SAC: actor, critic and critic target, each with its own features extractor
    unless ``share_features_extractor`` (then the critic uses the actor's, without training it).

    :param observation_space: observation space
    :param action_space: a Box action space
    :param lr_schedule: learning-rate schedule (its value at 1 is the initial learning rate)
    :param net_arch: list of hidden sizes (both networks) or ``dict(pi=[...], qf=[...])``;
        ``[256, 256]`` by default
    :param activation_fn: activation class (``nn.ReLU``)
    :param use_sde: gSDE (not implemented)
    :param log_std_init: gSDE option (unused)
    :param use_expln: gSDE option (unused)
    :param clip_mean: gSDE option (unused)
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: keyword arguments for it
    :param normalize_images: scale uint8 images to [0, 1]
    :param optimizer_class: MLX optimizer class (Adam with PyTorch-style bias correction)
    :param optimizer_kwargs: keyword arguments for the optimizer
    :param n_critics: number of Q-networks
    :param share_features_extractor: share the actor's extractor with the critic
    """

    actor: Actor
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    eval_only_submodules = ("critic_target",)

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[optim.Optimizer] = optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        _no_sde(use_sde)
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"SAC needs a Box action space, got {action_space}")
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
        )
        if net_arch is None:
            net_arch = [256, 256]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)
        net_args = dict(
            observation_space=observation_space,
            action_space=action_space,
            net_arch=actor_arch,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
        )
        actor_kwargs = dict(net_args, use_sde=use_sde, log_std_init=log_std_init, use_expln=use_expln)
        actor_kwargs["clip_mean"] = clip_mean
        critic_kwargs = dict(net_args, net_arch=critic_arch, n_critics=n_critics)
        critic_kwargs["share_features_extractor"] = share_features_extractor
        self._set_config(
            net_arch=net_arch,
            activation_fn=activation_fn,
            use_sde=use_sde,
            log_std_init=log_std_init,
            use_expln=use_expln,
            clip_mean=clip_mean,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
            net_args=net_args,
            actor_kwargs=actor_kwargs,
            critic_kwargs=critic_kwargs,
        )
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = make_module_optimizer(
            self.actor, self.optimizer_class, lr_schedule, self.optimizer_kwargs
        )
        if self.share_features_extractor:
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
        else:
            self.critic = self.make_critic(features_extractor=None)
        self.critic.optimizer = make_module_optimizer(
            self.critic,
            self.optimizer_class,
            lr_schedule,
            self.optimizer_kwargs,
            exclude_features_extractor=self.share_features_extractor,
        )
        # The target always has its own extractor
        self.critic_target = self.make_critic(features_extractor=None)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.set_training_mode(False)
        self.critic_target.freeze()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                use_sde=self.use_sde,
                log_std_init=self.log_std_init,
                use_expln=self.use_expln,
                clip_mean=self.clip_mean,
                n_critics=self.n_critics,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
            )
        )
        return data

    def reset_noise(self, batch_size: int = 1) -> None:
        """gSDE hook (nothing to reset: gSDE is not implemented)."""

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return Actor(**actor_kwargs)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return ContinuousCritic(**critic_kwargs)

    def __call__(self, obs: Any, deterministic: bool = False) -> mx.array:
        return self._predict(obs, deterministic=deterministic)

    def forward(self, obs: Any, deterministic: bool = False) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(obs, deterministic)

    def _predict(self, observation: Any, deterministic: bool = False) -> mx.array:
        return self.actor(observation, deterministic)

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        return self.actor._predict_numpy(observation, deterministic)



MlpPolicy = SACPolicy


CnnPolicy = with_features_extractor(
    SACPolicy, NatureCNN, "CnnPolicy", "SAC policy with a NatureCNN features extractor."
)
MultiInputPolicy = with_features_extractor(
    SACPolicy, CombinedExtractor, "MultiInputPolicy", "SAC policy for Dict observations (CombinedExtractor)."
)

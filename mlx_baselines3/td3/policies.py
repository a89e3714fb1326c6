"""TD3 (and DDPG) policies: a deterministic tanh actor, Q critics and their target copies.

The target networks are frozen child modules: they are saved with the policy and declared in
the compiled step's state, but they are not in ``trainable_parameters()`` and only move by
Polyak averaging.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.critics import ContinuousCritic, get_actor_critic_arch, make_module_optimizer
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

__all__ = ["Actor", "TD3Policy", "MlpPolicy", "CnnPolicy", "MultiInputPolicy"]


class Actor(BasePolicy):
    """Deterministic actor ``tanh(mlp(features))``, actions in [-1, 1].

    :param observation_space: observation space
    :param action_space: a Box action space
    :param net_arch: hidden layer sizes
    :param features_extractor: features extractor
    :param features_dim: number of features
    :param activation_fn: activation class
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
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self._set_config(net_arch=list(net_arch), features_dim=features_dim, activation_fn=activation_fn)
        action_dim = get_action_dim(action_space)
        self.mu = Mlp(
            *create_mlp(features_dim, action_dim, list(net_arch), activation_fn, squash_output=True)
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
            )
        )
        return data

    def __call__(self, obs: Any) -> mx.array:
        """Actions in [-1, 1]."""
        return self.mu(self.extract_features(obs, self.features_extractor))

    def forward(self, obs: Any) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(obs)

    def _predict(self, observation: Any, deterministic: bool = False) -> mx.array:
        # Deterministic either way: exploration noise is added by the algorithm.
        return self(observation)

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        # tanh(mlp(obs)) on flat Box observations, from a NumPy copy of mu
        features = flat_box_features(self, observation)
        replica = numpy_replica(self, "mu")
        return None if features is None or replica is None else replica(features)


class TD3Policy(BasePolicy):
    """Policy of TD3/DDPG: actor, actor target, critic and critic target.

    :param observation_space: observation space
    :param action_space: a Box action space
    :param lr_schedule: learning-rate schedule (its value at 1 is the initial learning rate)
    :param net_arch: list of hidden sizes (both networks) or ``dict(pi=[...], qf=[...])``;
        ``[400, 300]`` by default (``[256, 256]`` with NatureCNN)
    :param activation_fn: activation class (``nn.ReLU``)
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: keyword arguments for it
    :param normalize_images: scale uint8 images to [0, 1]
    :param optimizer_class: MLX optimizer class (Adam with PyTorch-style bias correction)
    :param optimizer_kwargs: keyword arguments for the optimizer
    :param n_critics: number of Q-networks
    :param share_features_extractor: the critic uses the actor's extractor (without training it)
    """

    actor: Actor
    actor_target: Actor
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    eval_only_submodules = ("actor_target", "critic_target")

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[optim.Optimizer] = optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ) -> None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"TD3/DDPG need a Box action space, got {action_space}")
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
            net_arch = [256, 256] if features_extractor_class == NatureCNN else [400, 300]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)
        net_args = dict(
            observation_space=observation_space,
            action_space=action_space,
            net_arch=actor_arch,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
        )
        critic_kwargs = dict(net_args, net_arch=critic_arch, n_critics=n_critics)
        critic_kwargs["share_features_extractor"] = share_features_extractor
        self._set_config(
            net_arch=net_arch,
            activation_fn=activation_fn,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
            net_args=net_args,
            actor_kwargs=dict(net_args),
            critic_kwargs=critic_kwargs,
        )
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor(features_extractor=None)
        self.actor_target = self.make_actor(features_extractor=None)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.actor.optimizer = make_module_optimizer(
            self.actor, self.optimizer_class, lr_schedule, self.optimizer_kwargs
        )
        if self.share_features_extractor:
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
            # The targets share their extractor too, as SB3's TD3 does
            self.critic_target = self.make_critic(features_extractor=self.actor_target.features_extractor)
        else:
            self.critic = self.make_critic(features_extractor=None)
            self.critic_target = self.make_critic(features_extractor=None)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = make_module_optimizer(
            self.critic,
            self.optimizer_class,
            lr_schedule,
            self.optimizer_kwargs,
            exclude_features_extractor=self.share_features_extractor,
        )
        for target in (self.actor_target, self.critic_target):
            target.set_training_mode(False)
            target.freeze()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_critics=self.n_critics,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
            )
        )
        return data

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return Actor(**actor_kwargs)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return ContinuousCritic(**critic_kwargs)

    def __call__(self, observation: Any, deterministic: bool = False) -> mx.array:
        return self._predict(observation, deterministic=deterministic)

    def forward(self, observation: Any, deterministic: bool = False) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(observation, deterministic)

    def _predict(self, observation: Any, deterministic: bool = False) -> mx.array:
        return self.actor(observation)

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        return self.actor._predict_numpy(observation, deterministic)



MlpPolicy = TD3Policy


CnnPolicy = with_features_extractor(
    TD3Policy, NatureCNN, "CnnPolicy", "TD3 policy with a NatureCNN features extractor."
)
MultiInputPolicy = with_features_extractor(
    TD3Policy, CombinedExtractor, "MultiInputPolicy", "TD3 policy for Dict observations (CombinedExtractor)."
)

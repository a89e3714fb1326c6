"""DQN policies: a Q-network and its target copy (a frozen child module, moved by hard updates)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.critics import make_module_optimizer
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
from mlx_baselines3.common.type_aliases import Schedule

__all__ = ["QNetwork", "DQNPolicy", "MlpPolicy", "CnnPolicy", "MultiInputPolicy"]


class QNetwork(BasePolicy):
    """Action-value network ``Q(s, .)`` for a Discrete action space.

    :param observation_space: observation space
    :param action_space: a Discrete action space
    :param features_extractor: features extractor
    :param features_dim: number of features
    :param net_arch: hidden layer sizes (``[64, 64]`` by default)
    :param activation_fn: activation class
    :param normalize_images: scale uint8 images to [0, 1]
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = [64, 64]
        self._set_config(net_arch=list(net_arch), features_dim=features_dim, activation_fn=activation_fn)
        action_dim = int(action_space.n)
        self.q_net = Mlp(*create_mlp(features_dim, action_dim, list(net_arch), activation_fn))

    def __call__(self, obs: Any) -> mx.array:
        """Q-values ``[B, n_actions]``."""
        return self.q_net(self.extract_features(obs, self.features_extractor))

    def forward(self, obs: Any) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(obs)

    def _predict(self, observation: Any, deterministic: bool = True) -> mx.array:
        # Greedy action; epsilon-greedy exploration is done by DQN.predict
        return mx.argmax(self(observation), axis=1).reshape(-1)

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        # The greedy action of an MLP on flat Box observations, from a NumPy copy of q_net
        features = flat_box_features(self, observation)
        replica = numpy_replica(self, "q_net")
        return None if features is None or replica is None else replica(features).argmax(axis=1)

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


class DQNPolicy(BasePolicy):
    """Policy of DQN: ``q_net`` (trained, ``policy.optimizer``) and ``q_net_target`` (frozen).

    :param observation_space: observation space
    :param action_space: a Discrete action space
    :param lr_schedule: learning-rate schedule (its value at 1 is the initial learning rate)
    :param net_arch: hidden layer sizes (``[64, 64]``; ``[]`` with NatureCNN)
    :param activation_fn: activation class (``nn.ReLU``)
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: keyword arguments for it
    :param normalize_images: scale uint8 images to [0, 1]
    :param optimizer_class: MLX optimizer class (Adam with PyTorch-style bias correction)
    :param optimizer_kwargs: keyword arguments for the optimizer
    """

    q_net: QNetwork
    q_net_target: QNetwork

    eval_only_submodules = ("q_net_target",)

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[optim.Optimizer] = optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"DQN needs a Discrete action space, got {action_space}")
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        if net_arch is None:
            net_arch = [] if features_extractor_class == NatureCNN else [64, 64]
        net_args = dict(
            observation_space=observation_space,
            action_space=action_space,
            net_arch=list(net_arch),
            activation_fn=activation_fn,
            normalize_images=normalize_images,
        )
        self._set_config(net_arch=list(net_arch), activation_fn=activation_fn, net_args=net_args)
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.q_net = self.make_q_net()
        self.q_net_target = self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        self.q_net_target.freeze()
        self.optimizer = make_module_optimizer(
            self.q_net, self.optimizer_class, lr_schedule, self.optimizer_kwargs
        )

    def make_q_net(self) -> QNetwork:
        """A new Q-network with its own features extractor."""
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return QNetwork(**net_args)

    def __call__(self, obs: Any, deterministic: bool = True) -> mx.array:
        return self._predict(obs, deterministic=deterministic)

    def forward(self, obs: Any, deterministic: bool = True) -> mx.array:
        """SB3's name for ``__call__``."""
        return self(obs, deterministic)

    def _predict(self, obs: Any, deterministic: bool = True) -> mx.array:
        return self.q_net._predict(obs, deterministic=deterministic)

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        return self.q_net._predict_numpy(observation, deterministic)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data



MlpPolicy = DQNPolicy


CnnPolicy = with_features_extractor(
    DQNPolicy, NatureCNN, "CnnPolicy", "DQN policy with a NatureCNN features extractor."
)
MultiInputPolicy = with_features_extractor(
    DQNPolicy, CombinedExtractor, "MultiInputPolicy", "DQN policy for Dict observations (CombinedExtractor)."
)

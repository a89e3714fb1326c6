"""Q-value critics for continuous actions (SAC, TD3, DDPG): SB3's ``ContinuousCritic`` in MLX."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from gymnasium import spaces

from mlx_baselines3.common.layers import BaseFeaturesExtractor, Mlp, create_mlp
from mlx_baselines3.common.policies import BaseModel, make_optimizer
from mlx_baselines3.common.preprocessing import get_action_dim
from mlx_baselines3.common.type_aliases import Schedule

__all__ = [
    "ContinuousCritic",
    "get_actor_critic_arch",
    "make_module_optimizer",
    "module_optimizer",
    "trainable_subtree",
]


def module_optimizer(module: nn.Module) -> optim.Optimizer:
    """The optimizer stored on ``module.optimizer`` (SB3 keeps ``actor.optimizer`` etc.)."""
    optimizer = getattr(module, "optimizer", None)
    if optimizer is None:
        raise ValueError(f"{type(module).__name__} has no optimizer")
    return optimizer


def get_actor_critic_arch(net_arch: list[int] | dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """Split ``net_arch`` into (actor, critic) layer sizes.

    A list means the same sizes for both; a dict needs the keys ``"pi"`` (actor) and ``"qf"`` (critic).
    """
    if isinstance(net_arch, dict):
        missing = {"pi", "qf"} - set(net_arch)
        if missing:
            raise ValueError(f"net_arch dict needs the keys 'pi' and 'qf'; missing {sorted(missing)}")
        actor_arch, critic_arch = list(net_arch["pi"]), list(net_arch["qf"])
    elif isinstance(net_arch, (list, tuple)):
        actor_arch = critic_arch = list(net_arch)
    else:
        raise TypeError(f"net_arch must be a list of ints or dict(pi=[...], qf=[...]), got {net_arch!r}")
    for width in actor_arch + critic_arch:
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"net_arch entries must be positive ints, got {net_arch!r}")
    return actor_arch, critic_arch


def trainable_subtree(module: nn.Module, exclude_features_extractor: bool) -> dict[str, Any]:
    """The module's trainable parameters, without ``features_extractor`` when it is shared.

    A features extractor shared with another network is trained by that network's optimizer
    only (SB3 excludes it from the critic's optimizer).
    """
    params = dict(module.trainable_parameters())
    if exclude_features_extractor:
        params.pop("features_extractor", None)
    return params


def make_module_optimizer(
    module: nn.Module,
    optimizer_class: type[optim.Optimizer],
    lr_schedule: Schedule,
    optimizer_kwargs: dict[str, Any] | None,
    exclude_features_extractor: bool = False,
) -> optim.Optimizer:
    """An optimizer for ``module`` with its state initialised (needed before compiling a step)."""
    optimizer = make_optimizer(optimizer_class, lr_schedule(1), optimizer_kwargs)
    optimizer.init(trainable_subtree(module, exclude_features_extractor))
    return optimizer


class ContinuousCritic(BaseModel):
    """``n_critics`` Q-networks ``Q(s, a)`` on top of a features extractor (clipped double Q).

    :param observation_space: observation space
    :param action_space: a Box action space
    :param net_arch: hidden layer sizes of each Q-network
    :param features_extractor: the features extractor (possibly the actor's)
    :param features_dim: number of features it produces
    :param activation_fn: activation class
    :param normalize_images: scale uint8 images to [0, 1]
    :param n_critics: number of Q-networks
    :param share_features_extractor: the extractor is the actor's: no gradient flows into it from
        the critic loss, and the critic's optimizer leaves it alone
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
        n_critics: int = 2,
        share_features_extractor: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        if int(n_critics) < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}")
        action_dim = get_action_dim(action_space)
        self._set_config(
            net_arch=list(net_arch),
            features_dim=features_dim,
            activation_fn=activation_fn,
            n_critics=int(n_critics),
            share_features_extractor=share_features_extractor,
        )
        self.q_networks = [
            Mlp(*create_mlp(features_dim + action_dim, 1, list(net_arch), activation_fn))
            for _ in range(self.n_critics)
        ]

    def _features(self, obs: Any) -> mx.array:
        features = self.extract_features(obs, self.features_extractor)
        if self.share_features_extractor:
            features = mx.stop_gradient(features)
        return features

    def __call__(self, obs: Any, actions: mx.array) -> tuple[mx.array, ...]:
        """Q-values ``[B, 1]`` of every critic."""
        qvalue_input = mx.concatenate([self._features(obs), actions], axis=1)
        return tuple(q_net(qvalue_input) for q_net in self.q_networks)

    def forward(self, obs: Any, actions: mx.array) -> tuple[mx.array, ...]:
        """SB3's name for ``__call__``."""
        return self(obs, actions)

    def q1_forward(self, obs: Any, actions: mx.array) -> mx.array:
        """Q-value of the first critic only (TD3's actor loss); the features get no gradient."""
        features = mx.stop_gradient(self.extract_features(obs, self.features_extractor))
        return self.q_networks[0](mx.concatenate([features, actions], axis=1))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                n_critics=self.n_critics,
                share_features_extractor=self.share_features_extractor,
            )
        )
        return data

"""Probability distributions over actions, in MLX (SB3's classes and method names).

A distribution object is built from network outputs with ``proba_distribution(...)`` and then
queried. Everything is plain MLX arithmetic, so it can run inside ``mx.compile``; sampling uses
MLX's global PRNG (declare ``mx.random.state`` in a compiled function that samples).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from gymnasium import spaces

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


def sum_independent_dims(values: mx.array) -> mx.array:
    """Sum log-probs or entropies over the action dimensions: ``[B, A] -> [B]`` (``[B] -> [B]``)."""
    return values.sum(axis=-1) if values.ndim > 1 else values


def softplus(x: mx.array) -> mx.array:
    """Numerically stable ``log(1 + exp(x))``."""
    return mx.logaddexp(x, mx.zeros_like(x))


def log_one_minus_tanh_squared(u: mx.array) -> mx.array:
    """``log(1 - tanh(u)^2)`` in the stable form ``2 * (log 2 - u - softplus(-2u))``."""
    return 2.0 * (_LOG_2 - u - softplus(-2.0 * u))


class Distribution(ABC):
    """Base class of action distributions."""

    def __init__(self) -> None:
        self.distribution: Any = None

    @abstractmethod
    def proba_distribution_net(self, *args: Any, **kwargs: Any) -> Any:
        """The layer(s) mapping a latent vector to the distribution's parameters."""

    @abstractmethod
    def proba_distribution(self, *args: Any, **kwargs: Any) -> Distribution:
        """Set the distribution's parameters; returns ``self``."""

    @abstractmethod
    def log_prob(self, actions: mx.array) -> mx.array:
        """Log-likelihood of ``actions``, one value per batch element."""

    @abstractmethod
    def entropy(self) -> mx.array | None:
        """Entropy per batch element (``None`` when there is no closed form)."""

    @abstractmethod
    def sample(self) -> mx.array:
        """A sample from the distribution."""

    @abstractmethod
    def mode(self) -> mx.array:
        """The most likely action (used for deterministic actions)."""

    def get_actions(self, deterministic: bool = False) -> mx.array:
        """``mode()`` when deterministic, else ``sample()``."""
        return self.mode() if deterministic else self.sample()

    @abstractmethod
    def actions_from_params(self, *args: Any, **kwargs: Any) -> mx.array:
        """Build the distribution from parameters and return actions."""

    @abstractmethod
    def log_prob_from_params(self, *args: Any, **kwargs: Any) -> tuple[mx.array, mx.array]:
        """Build the distribution from parameters and return ``(actions, log_prob)``."""


class DiagGaussianDistribution(Distribution):
    """Gaussian with diagonal covariance; the log std is a state-independent parameter.

    :param action_dim: number of continuous action dimensions
    """

    def __init__(self, action_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.mean_actions: mx.array | None = None
        self.log_std: mx.array | None = None

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> tuple[nn.Linear, mx.array]:
        """A linear layer for the mean and the initial log std vector (a trainable parameter)."""
        mean_actions = nn.Linear(latent_dim, self.action_dim)
        log_std = mx.full((self.action_dim,), log_std_init, dtype=mx.float32)
        return mean_actions, log_std

    def proba_distribution(self, mean_actions: mx.array, log_std: mx.array) -> DiagGaussianDistribution:
        self.mean_actions = mean_actions
        self.log_std = mx.broadcast_to(log_std, mean_actions.shape)
        return self

    @property
    def std(self) -> mx.array:
        assert self.log_std is not None
        return mx.exp(self.log_std)

    def log_prob(self, actions: mx.array) -> mx.array:
        assert self.mean_actions is not None and self.log_std is not None
        z = (actions - self.mean_actions) * mx.exp(-self.log_std)
        return sum_independent_dims(-0.5 * z * z - self.log_std - _LOG_SQRT_2PI)

    def entropy(self) -> mx.array:
        assert self.log_std is not None
        return sum_independent_dims(0.5 + _LOG_SQRT_2PI + self.log_std)

    def sample(self) -> mx.array:
        assert self.mean_actions is not None
        noise = mx.random.normal(self.mean_actions.shape, dtype=self.mean_actions.dtype)
        return self.mean_actions + self.std * noise

    def mode(self) -> mx.array:
        assert self.mean_actions is not None
        return self.mean_actions

    def actions_from_params(self, mean_actions: mx.array, log_std: mx.array, deterministic: bool = False) -> mx.array:
        self.proba_distribution(mean_actions, log_std)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, mean_actions: mx.array, log_std: mx.array) -> tuple[mx.array, mx.array]:
        actions = self.actions_from_params(mean_actions, log_std)
        return actions, self.log_prob(actions)


class SquashedDiagGaussianDistribution(DiagGaussianDistribution):
    """Gaussian followed by ``tanh``, so actions lie in (-1, 1) (SAC's policy).

    :param action_dim: number of continuous action dimensions
    :param epsilon: margin used to clip actions before ``atanh`` (must survive float32: 1e-6)
    """

    def __init__(self, action_dim: int, epsilon: float = 1e-6) -> None:
        super().__init__(action_dim)
        self.epsilon = epsilon
        self.gaussian_actions: mx.array | None = None

    def proba_distribution(self, mean_actions: mx.array, log_std: mx.array) -> SquashedDiagGaussianDistribution:
        super().proba_distribution(mean_actions, log_std)
        return self

    @staticmethod
    def atanh(x: mx.array) -> mx.array:
        """Inverse of ``tanh``."""
        return 0.5 * (mx.log1p(x) - mx.log1p(-x))

    def inverse(self, actions: mx.array) -> mx.array:
        """``atanh`` of actions clipped to ``(-1 + eps, 1 - eps)``."""
        return self.atanh(mx.clip(actions, -1.0 + self.epsilon, 1.0 - self.epsilon))

    def log_prob(self, actions: mx.array, gaussian_actions: mx.array | None = None) -> mx.array:
        """Log-likelihood of squashed actions; pass the pre-tanh ``gaussian_actions`` when known."""
        if gaussian_actions is None:
            gaussian_actions = self.inverse(actions)
        log_prob = super().log_prob(gaussian_actions)
        return log_prob - sum_independent_dims(log_one_minus_tanh_squared(gaussian_actions))

    def entropy(self) -> mx.array | None:  # type: ignore[override]
        # No closed form: SAC estimates it with -log_prob.
        return None

    def sample(self) -> mx.array:
        self.gaussian_actions = super().sample()
        return mx.tanh(self.gaussian_actions)

    def mode(self) -> mx.array:
        self.gaussian_actions = super().mode()
        return mx.tanh(self.gaussian_actions)

    def log_prob_from_params(self, mean_actions: mx.array, log_std: mx.array) -> tuple[mx.array, mx.array]:
        action = self.actions_from_params(mean_actions, log_std)
        return action, self.log_prob(action, self.gaussian_actions)


class CategoricalDistribution(Distribution):
    """Categorical distribution for a Discrete action space.

    :param action_dim: number of actions
    """

    def __init__(self, action_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.logits: mx.array | None = None

    def proba_distribution_net(self, latent_dim: int) -> nn.Linear:
        return nn.Linear(latent_dim, self.action_dim)

    def proba_distribution(self, action_logits: mx.array) -> CategoricalDistribution:
        self.logits = action_logits - mx.logsumexp(action_logits, axis=-1, keepdims=True)
        return self

    @property
    def probs(self) -> mx.array:
        assert self.logits is not None
        return mx.exp(self.logits)

    def log_prob(self, actions: mx.array) -> mx.array:
        assert self.logits is not None
        indices = actions.astype(mx.int32).reshape(*self.logits.shape[:-1], 1)
        return mx.take_along_axis(self.logits, indices, axis=-1).squeeze(-1)

    def entropy(self) -> mx.array:
        assert self.logits is not None
        return -(self.probs * self.logits).sum(axis=-1)

    def sample(self) -> mx.array:
        assert self.logits is not None
        return mx.random.categorical(self.logits, axis=-1)

    def mode(self) -> mx.array:
        assert self.logits is not None
        return mx.argmax(self.logits, axis=-1)

    def actions_from_params(self, action_logits: mx.array, deterministic: bool = False) -> mx.array:
        self.proba_distribution(action_logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits: mx.array) -> tuple[mx.array, mx.array]:
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


class MultiCategoricalDistribution(Distribution):
    """Independent categorical distributions, one per MultiDiscrete component.

    :param action_dims: number of choices of each component
    """

    def __init__(self, action_dims: list[int]) -> None:
        super().__init__()
        self.action_dims = [int(n) for n in action_dims]
        self.distributions: list[CategoricalDistribution] = []

    def proba_distribution_net(self, latent_dim: int) -> nn.Linear:
        return nn.Linear(latent_dim, sum(self.action_dims))

    def proba_distribution(self, action_logits: mx.array) -> MultiCategoricalDistribution:
        splits = np.cumsum(self.action_dims)[:-1].tolist()
        self.distributions = [
            CategoricalDistribution(n).proba_distribution(logits)
            for n, logits in zip(self.action_dims, mx.split(action_logits, splits, axis=-1))
        ]
        return self

    def log_prob(self, actions: mx.array) -> mx.array:
        return mx.stack(
            [dist.log_prob(actions[..., i]) for i, dist in enumerate(self.distributions)], axis=-1
        ).sum(axis=-1)

    def entropy(self) -> mx.array:
        return mx.stack([dist.entropy() for dist in self.distributions], axis=-1).sum(axis=-1)

    def sample(self) -> mx.array:
        return mx.stack([dist.sample() for dist in self.distributions], axis=-1)

    def mode(self) -> mx.array:
        return mx.stack([dist.mode() for dist in self.distributions], axis=-1)

    def actions_from_params(self, action_logits: mx.array, deterministic: bool = False) -> mx.array:
        self.proba_distribution(action_logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits: mx.array) -> tuple[mx.array, mx.array]:
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


class BernoulliDistribution(Distribution):
    """Independent Bernoulli variables for a MultiBinary action space.

    :param action_dims: number of binary components
    """

    def __init__(self, action_dims: int) -> None:
        super().__init__()
        self.action_dims = int(action_dims)
        self.logits: mx.array | None = None

    def proba_distribution_net(self, latent_dim: int) -> nn.Linear:
        return nn.Linear(latent_dim, self.action_dims)

    def proba_distribution(self, action_logits: mx.array) -> BernoulliDistribution:
        self.logits = action_logits
        return self

    @property
    def probs(self) -> mx.array:
        assert self.logits is not None
        return mx.sigmoid(self.logits)

    def log_prob(self, actions: mx.array) -> mx.array:
        assert self.logits is not None
        actions = actions.astype(self.logits.dtype)
        # log sigmoid(l) = -softplus(-l); log (1 - sigmoid(l)) = -softplus(l)
        log_p = -(actions * softplus(-self.logits) + (1.0 - actions) * softplus(self.logits))
        return log_p.sum(axis=-1)

    def entropy(self) -> mx.array:
        assert self.logits is not None
        p = self.probs
        entropy = p * softplus(-self.logits) + (1.0 - p) * softplus(self.logits)
        return entropy.sum(axis=-1)

    def sample(self) -> mx.array:
        return mx.random.bernoulli(self.probs).astype(mx.float32)

    def mode(self) -> mx.array:
        assert self.logits is not None
        return (self.logits > 0).astype(mx.float32)

    def actions_from_params(self, action_logits: mx.array, deterministic: bool = False) -> mx.array:
        self.proba_distribution(action_logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits: mx.array) -> tuple[mx.array, mx.array]:
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


def make_proba_distribution(
    action_space: spaces.Space, use_sde: bool = False, dist_kwargs: dict[str, Any] | None = None
) -> Distribution:
    """The distribution that matches ``action_space``.

    :raises NotImplementedError: for gSDE (``use_sde=True``) and unsupported action spaces
    """
    if use_sde:
        raise NotImplementedError("gSDE (use_sde=True) is not supported by mlx_baselines3 yet")
    dist_kwargs = dist_kwargs or {}
    if isinstance(action_space, spaces.Box):
        return DiagGaussianDistribution(int(np.prod(action_space.shape)), **dist_kwargs)
    if isinstance(action_space, spaces.Discrete):
        return CategoricalDistribution(int(action_space.n), **dist_kwargs)
    if isinstance(action_space, spaces.MultiDiscrete):
        return MultiCategoricalDistribution(list(np.asarray(action_space.nvec).reshape(-1)), **dist_kwargs)
    if isinstance(action_space, spaces.MultiBinary):
        if not isinstance(action_space.n, (int, np.integer)):
            raise NotImplementedError("Multi-dimensional MultiBinary action spaces are not supported")
        return BernoulliDistribution(int(action_space.n), **dist_kwargs)
    raise NotImplementedError(
        f"Action space {action_space} ({type(action_space).__name__}) is not supported: "
        "use Box, Discrete, MultiDiscrete or MultiBinary"
    )

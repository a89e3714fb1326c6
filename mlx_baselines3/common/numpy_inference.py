"""A NumPy copy of an MLP actor-critic's forward pass, for cheap action selection on the CPU.

Choosing actions for a handful of envs multiplies tiny matrices: with MLX's CPU backend each call
pays a fixed cost per operation (~0.25 ms for a 64x64 actor-critic and 8 envs here), while
NumPy does the same forward pass in ~0.04 ms. During rollouts, on-policy algorithms therefore
run this replica of the policy's forward pass, refreshed from the MLX parameters after every
update. It covers the standard ``ActorCriticPolicy``: ``FlattenExtractor``, ``MlpExtractor`` of
Linear layers and common activations, the SB3 value head, and Categorical, DiagGaussian,
MultiCategorical and Bernoulli actions. Anything else (images, Dict observations, custom
networks, the two-hot critic) uses the compiled MLX path. Both paths compute the same function:
``tests/test_numpy_inference.py`` checks they agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.nn as nn
import numpy as np
from gymnasium import spaces
from mlx.utils import tree_flatten

from mlx_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from mlx_baselines3.common.layers import FlattenExtractor, Linear, MlpExtractor
from mlx_baselines3.common.preprocessing import is_image_space

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x, 0.0)


_ACTIVATIONS: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {
    nn.Tanh: np.tanh,
    nn.ReLU: lambda x: np.maximum(x, 0.0),
    nn.Sigmoid: lambda x: 1.0 / (1.0 + np.exp(-x)),
    nn.SiLU: lambda x: x / (1.0 + np.exp(-x)),
    nn.Softplus: _softplus,
    nn.Identity: lambda x: x,
}


def _activation(layer: nn.Module) -> Callable[[np.ndarray], np.ndarray] | None:
    """The NumPy function of a known activation layer (exact types only: a subclass may differ)."""
    from mlx_baselines3.common.activations import Tanh

    if type(layer) is Tanh:  # our CPU tanh: the same function as nn.Tanh
        return np.tanh
    return _ACTIVATIONS.get(type(layer))


def _layers_of(module: nn.Module) -> list[nn.Module] | None:
    """The layers of an ``nn.Sequential``, or a lone Linear as a one-layer network (SAC's heads)."""
    if isinstance(module, nn.Sequential):
        return list(module.layers)
    if type(module) in (nn.Linear, Linear):
        return [module]
    return None


def _sequential_plan(sequential: nn.Module) -> list[tuple[str, Any]] | None:
    """[("linear", index) | ("act", fn)] for an ``nn.Sequential`` of Linear and known activations
    (or a lone Linear)."""
    layers = _layers_of(sequential)
    if layers is None:
        return None
    plan: list[tuple[str, Any]] = []
    for index, layer in enumerate(layers):
        if type(layer) in (nn.Linear, Linear):
            plan.append(("linear", index))
        else:
            fn = _activation(layer)
            if fn is None:
                return None
            plan.append(("act", fn))
    return plan


# Weights up to this size are stored transposed and contiguous (a batch of 8 through a transposed
# view is ~2x slower); bigger ones stay a transposed view: the copy of a 256x256 weight cost ~170 us,
# paid again whenever the parameters change, which for SAC is every env step.
_TRANSPOSE_COPY_MAX = 128 * 128


def host_view(array: Any) -> np.ndarray:
    """A read-only NumPy view of an MLX array's memory (no copy: ~0.4 us against ~6.5 us to copy a
    256x256 weight). MLX arrays are immutable and the view keeps the array alive, so the view's
    values never change; it is made read-only so that NumPy cannot write into MLX's buffer."""
    view = np.asarray(array)
    view.flags.writeable = False
    return view

NumpyLayer = tuple[np.ndarray, np.ndarray | None] | Callable[[np.ndarray], np.ndarray]
"""A Linear layer as ``(weight.T, bias or None)`` (ready for ``x @ weight_t``) or an activation."""


def _copy_layers(sequential: nn.Sequential, plan: list[tuple[str, Any]]) -> list[NumpyLayer]:
    """NumPy copies of the layers of ``sequential`` following its :func:`_sequential_plan`."""
    layers: list[NumpyLayer] = []
    modules = _layers_of(sequential)
    assert modules is not None
    for kind, item in plan:
        if kind == "linear":
            linear = modules[item]
            bias = linear.get("bias")
            weight_t = host_view(linear["weight"]).T
            if weight_t.size <= _TRANSPOSE_COPY_MAX:
                weight_t = weight_t.copy()
            layers.append((weight_t, None if bias is None else host_view(bias)))
        else:
            layers.append(item)
    return layers


def _apply_layers(x: np.ndarray, layers: list[NumpyLayer]) -> np.ndarray:
    for layer in layers:
        if isinstance(layer, tuple):
            weight_t, bias = layer
            x = x @ weight_t if bias is None else x @ weight_t + bias
        else:
            x = layer(x)
    return x


class _ParameterSlots:
    """Where each parameter of ``module`` lives (the layer module or list, and its key), found
    once; :meth:`read` notes the arrays there now and :meth:`changed` says whether any was replaced
    since. MLX arrays are immutable, so an update (training step, ``load_state_dict``,
    ``set_parameters``) always puts new array objects in the module: comparing identities is a
    complete and cheap (microseconds) staleness check."""

    def __init__(self, module: nn.Module) -> None:
        self._names: list[str] = []
        self._slots: list[tuple[Any, Any]] = []
        flat: Any = tree_flatten(module.parameters())
        for name, _ in flat:
            *path, last = name.split(".")
            container: Any = module
            for part in path:
                container = container[int(part)] if isinstance(container, list) else container[part]
            self._names.append(name)
            self._slots.append((container, int(last) if isinstance(container, list) else last))
        self._seen: list[Any] = []

    def read(self) -> dict[str, Any]:
        """Note the arrays the slots hold now; returns them by dotted name (as ``state_dict``)."""
        self._seen = [container[key] for container, key in self._slots]
        return dict(zip(self._names, self._seen))

    def changed(self) -> bool:
        """Whether any slot holds another array than at the last :meth:`read`."""
        return any(container[key] is not array for (container, key), array in zip(self._slots, self._seen))


class NumpySequential:
    """A NumPy copy of an ``nn.Sequential`` of ``nn.Linear`` layers and common activations.

    Used for the greedy/deterministic actions of DQN's Q-network and TD3/DDPG's actor: one
    observation through a 256x256 MLP costs ~15 us in NumPy against ~90 us for an MLX call on the
    CPU. The weights are re-copied whenever an MLX parameter was replaced (the same identity check
    as :meth:`NumpyActorCritic.ensure_current`).

    :param sequential: the MLX network it copies (build with :meth:`from_sequential`)
    """

    def __init__(self, sequential: nn.Sequential) -> None:
        plan = _sequential_plan(sequential)
        assert plan is not None, "use NumpySequential.from_sequential"
        self.sequential = sequential
        self._plan = plan
        self._parameters = _ParameterSlots(sequential)
        self._layers: list[NumpyLayer] = []
        self.refresh()

    @classmethod
    def from_sequential(cls, sequential: Any) -> NumpySequential | None:
        """The replica, or None when ``sequential`` has a layer it does not cover."""
        return cls(sequential) if _sequential_plan(sequential) is not None else None

    def refresh(self) -> None:
        """Copy the current MLX parameters."""
        self._parameters.read()
        self._layers = _copy_layers(self.sequential, self._plan)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The network's output for a float32 batch ``[B, in_features]``."""
        if self._parameters.changed():
            self.refresh()
        return _apply_layers(x, self._layers)


def numpy_replica(module: nn.Module, name: str) -> NumpySequential | None:
    """The NumPy copy of the ``nn.Sequential`` (or Linear) ``module.<name>``, built once and kept on
    ``module`` (None when it has a layer the copy does not cover)."""
    cache = module.__dict__.setdefault("_numpy_replicas", {})
    sequential = getattr(module, name)
    replica = cache.get(name)
    if replica is None or (replica is not False and replica.sequential is not sequential):
        replica = NumpySequential.from_sequential(sequential) or False
        cache[name] = replica
    return replica or None


def flat_box_features(policy: Any, obs: np.ndarray) -> np.ndarray | None:
    """The features a ``FlattenExtractor`` gives for a batch of non-image Box observations, else None."""
    space = policy.observation_space
    if type(getattr(policy, "features_extractor", None)) is not FlattenExtractor:
        return None
    if not isinstance(space, spaces.Box) or is_image_space(space):
        return None
    return np.asarray(obs).reshape(len(obs), -1).astype(np.float32, copy=False)


class NumpyActorCritic:
    """Actions, values and log-probabilities of an ``ActorCriticPolicy``, computed with NumPy.

    Build it with :meth:`from_policy` (None when the policy is not covered), call :meth:`refresh`
    after the MLX parameters change, then call it on a batch of raw observations.

    :param policy: the MLX policy it copies
    :param rng: NumPy generator used for sampling (default: NumPy's global one, seeded by
        ``set_random_seed``)
    """

    def __init__(self, policy: Any, rng: Any = None) -> None:
        self.policy = policy
        self.rng = rng if rng is not None else np.random
        self._pi_plan = _sequential_plan(policy.mlp_extractor.policy_net)
        self._vf_plan = _sequential_plan(policy.mlp_extractor.value_net)
        self._parameters = _ParameterSlots(policy)
        self._weights: dict[str, np.ndarray] = {}
        self._pi_layers: list[NumpyLayer] = []
        self._vf_layers: list[NumpyLayer] = []
        self.refresh()

    @classmethod
    def supports(cls, policy: Any) -> bool:
        """Whether ``policy`` is a standard MLP actor-critic this replica computes exactly."""
        from mlx_baselines3.common.policies import ActorCriticPolicy

        if not isinstance(policy, ActorCriticPolicy):
            return False
        policy_type = type(policy)
        for name in ("__call__", "_latents", "_get_action_dist_from_latent", "predict_values", "extract_features"):
            if getattr(policy_type, name) is not getattr(ActorCriticPolicy, name):
                return False
        if getattr(policy, "value_head", "mse") != "mse":
            return False
        extractors = [policy.features_extractor]
        if not policy.share_features_extractor:
            extractors.append(policy.vf_features_extractor)
        if any(type(extractor) is not FlattenExtractor for extractor in extractors):
            return False
        if type(policy.mlp_extractor) is not MlpExtractor:
            return False
        space = policy.observation_space
        if isinstance(space, spaces.Box):
            if policy.normalize_images and is_image_space(space):
                return False
        elif not isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
            return False
        if type(policy.action_dist) not in (
            CategoricalDistribution,
            DiagGaussianDistribution,
            MultiCategoricalDistribution,
            BernoulliDistribution,
        ):
            return False
        if type(policy.action_net) is not nn.Linear or type(policy.value_net) is not nn.Linear:
            return False
        return (
            _sequential_plan(policy.mlp_extractor.policy_net) is not None
            and _sequential_plan(policy.mlp_extractor.value_net) is not None
        )

    @classmethod
    def from_policy(cls, policy: Any, rng: Any = None) -> NumpyActorCritic | None:
        """The replica of ``policy``, or None when it is not covered."""
        return cls(policy, rng) if cls.supports(policy) else None

    def refresh(self) -> None:
        """Copy the current MLX parameters (done automatically when they change, see :meth:`ensure_current`)."""
        self._weights = {name: host_view(value) for name, value in self._parameters.read().items()}
        assert self._pi_plan is not None and self._vf_plan is not None
        extractor = self.policy.mlp_extractor
        self._pi_layers = _copy_layers(extractor.policy_net, self._pi_plan)
        self._vf_layers = _copy_layers(extractor.value_net, self._vf_plan)

    def ensure_current(self) -> None:
        """Re-copy the parameters if any was replaced since the last copy (an identity check,
        see :class:`_ParameterSlots`)."""
        if self._parameters.changed():
            self.refresh()

    # -- forward ---------------------------------------------------------------------------------

    def _features(self, obs: np.ndarray) -> np.ndarray:
        space = self.policy.observation_space
        obs = np.asarray(obs)
        if isinstance(space, spaces.Discrete):
            indices = obs.reshape(-1).astype(np.int64) - int(space.start)
            return np.eye(int(space.n), dtype=np.float32)[indices]
        if isinstance(space, spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).reshape(-1)
            obs = obs.reshape(-1, len(nvec)).astype(np.int64)
            return np.concatenate([np.eye(int(n), dtype=np.float32)[obs[:, i]] for i, n in enumerate(nvec)], axis=1)
        return obs.reshape(obs.shape[0], -1).astype(np.float32, copy=False)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        out = x @ self._weights[f"{name}.weight"].T
        bias = self._weights.get(f"{name}.bias")
        return out + bias if bias is not None else out

    def values(self, obs: np.ndarray) -> np.ndarray:
        """Value estimates ``[B, 1]``."""
        self.ensure_current()
        return self._values_from_features(self._features(obs))

    def _values_from_features(self, features: np.ndarray) -> np.ndarray:
        # Both extractors are FlattenExtractor (no parameters): actor and critic see the same features
        latent_vf = _apply_layers(features, self._vf_layers)
        return self._linear(latent_vf, "value_net")

    def __call__(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions (as the MLX policy returns them), values ``[B, 1]`` and log-probabilities ``[B]``."""
        self.ensure_current()
        features = self._features(obs)
        latent_pi = _apply_layers(features, self._pi_layers)
        actions, log_prob = self._sample(self._linear(latent_pi, "action_net"), deterministic)
        values = self._values_from_features(features)
        return actions.reshape((-1, *self.policy.action_space.shape)), values, log_prob

    def _sample(self, params: np.ndarray, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        dist = self.policy.action_dist
        if isinstance(dist, DiagGaussianDistribution):
            log_std = self._weights["log_std"]
            if deterministic:
                actions = params
            else:
                actions = params + np.exp(log_std) * self.rng.standard_normal(params.shape).astype(np.float32)
            z = (actions - params) * np.exp(-log_std)
            log_prob = (-0.5 * z * z - log_std - _LOG_SQRT_2PI).sum(axis=1)
            return actions.astype(np.float32), log_prob.astype(np.float32)
        if isinstance(dist, CategoricalDistribution):
            return self._categorical(params, deterministic)
        if isinstance(dist, MultiCategoricalDistribution):
            splits = np.cumsum(dist.action_dims)[:-1]
            parts = [self._categorical(logits, deterministic) for logits in np.split(params, splits, axis=1)]
            actions = np.stack([a for a, _ in parts], axis=1)
            return actions, np.sum([lp for _, lp in parts], axis=0).astype(np.float32)
        if isinstance(dist, BernoulliDistribution):
            probs = 1.0 / (1.0 + np.exp(-params))
            if deterministic:
                actions = (params > 0).astype(np.float32)
            else:
                actions = (self.rng.random(params.shape) < probs).astype(np.float32)
            log_prob = -(actions * _softplus(-params) + (1.0 - actions) * _softplus(params)).sum(axis=1)
            return actions, log_prob.astype(np.float32)
        raise NotImplementedError(f"No NumPy sampling for {type(dist).__name__}")

    def _categorical(self, logits: np.ndarray, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if deterministic:
            actions = log_probs.argmax(axis=1)
        else:
            cumulative = np.cumsum(np.exp(log_probs), axis=1)
            draws = self.rng.random((logits.shape[0], 1)) * cumulative[:, -1:]
            actions = np.minimum((cumulative < draws).sum(axis=1), logits.shape[1] - 1)
        return actions.astype(np.int64), log_probs[np.arange(logits.shape[0]), actions].astype(np.float32)

"""Policies as ``mlx.nn.Module``s (SB3's ``BaseModel`` / ``BasePolicy`` / ``ActorCriticPolicy``).

A policy's trainable arrays are its parameter tree and nothing else: spaces, configuration and
the optimizer are plain Python attributes (set with ``object.__setattr__`` where MLX would
otherwise register a dict or list as a child of the module).
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from functools import partial
from typing import Any, ClassVar, TypeVar

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    make_proba_distribution,
)
from mlx_baselines3.common.layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
    orthogonal_init,
)
from mlx_baselines3.common.optimizers import FAST_EQUIVALENTS
from mlx_baselines3.common.preprocessing import (
    check_observation_space,
    is_image_space,
    maybe_transpose,
    preprocess_obs,
)
from mlx_baselines3.common.type_aliases import Schedule
from mlx_baselines3.common.utils import obs_as_mx
from mlx_baselines3.world_models.twohot import TwoHot
from mlx_baselines3.world_models.value_loss import twohot_value_loss, twohot_values

SelfBaseModel = TypeVar("SelfBaseModel", bound="BaseModel")


def make_optimizer(
    optimizer_class: type[optim.Optimizer], learning_rate: float, optimizer_kwargs: dict[str, Any] | None
) -> optim.Optimizer:
    """Build an MLX optimizer with SB3/PyTorch semantics.

    MLX's ``Adam``/``AdamW`` default to no bias correction; PyTorch (and so SB3) always corrects,
    so ``bias_correction=True`` is the default here unless the caller says otherwise.
    """
    kwargs = dict(optimizer_kwargs or {})
    if issubclass(optimizer_class, (optim.Adam, optim.AdamW)):
        kwargs.setdefault("bias_correction", True)
    # PyTorch spelling -> MLX spelling
    # PyTorch's Adam and RMSprop take weight_decay (SB3 passes 0); MLX's do not
    if (
        "weight_decay" in kwargs
        and not issubclass(optimizer_class, optim.AdamW)
        and issubclass(optimizer_class, (optim.Adam, optim.RMSprop))
    ):
        if kwargs["weight_decay"]:
            raise ValueError(
                f"{optimizer_class.__name__} with weight_decay is not supported by MLX: use mlx.optimizers.AdamW"
            )
        kwargs.pop("weight_decay")
    # Same update rule, cheaper on MLX's CPU backend (see common/optimizers.py)
    optimizer_class = FAST_EQUIVALENTS.get(optimizer_class, optimizer_class)
    return optimizer_class(learning_rate=learning_rate, **kwargs)  # type: ignore[call-arg]


class BaseModel(nn.Module):
    """Base class of policies, Q-networks, actors and critics.

    Holds the spaces, the features-extractor configuration and the optimizer, and handles the
    conversion of NumPy observations to preprocessed MLX arrays.

    :param observation_space: the observation space
    :param action_space: the action space
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: keyword arguments for it
    :param features_extractor: an existing extractor to use (shared with another network)
    :param normalize_images: scale uint8 images to [0, 1]
    :param optimizer_class: MLX optimizer class
    :param optimizer_kwargs: keyword arguments for the optimizer
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        features_extractor: BaseFeaturesExtractor | None = None,
        normalize_images: bool = True,
        optimizer_class: type[optim.Optimizer] = optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_observation_space(observation_space)
        self._set_config(
            observation_space=observation_space,
            action_space=action_space,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=dict(features_extractor_kwargs or {}),
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=dict(optimizer_kwargs or {}),
        )
        self.optimizer: optim.Optimizer | None = None
        if features_extractor is not None:
            self.features_extractor = features_extractor

    def _set_config(self, **attributes: Any) -> None:
        """Set plain (non-parameter) attributes, bypassing MLX's registration of dicts and lists."""
        for key, value in attributes.items():
            self.pop(key, None)
            object.__setattr__(self, key, value)

    # -- features --------------------------------------------------------------------------------

    def _update_features_extractor(
        self, net_kwargs: dict[str, Any], features_extractor: BaseFeaturesExtractor | None = None
    ) -> dict[str, Any]:
        net_kwargs = net_kwargs.copy()
        if features_extractor is None:
            features_extractor = self.make_features_extractor()
        net_kwargs.update(
            dict(features_extractor=features_extractor, features_dim=features_extractor.features_dim)
        )
        return net_kwargs

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        """A new features extractor built from the stored class and kwargs."""
        extractor = self.features_extractor_class(self.observation_space, **self.features_extractor_kwargs)
        if not isinstance(extractor, BaseFeaturesExtractor):
            raise TypeError(
                f"features_extractor_class must build a BaseFeaturesExtractor, got {type(extractor).__name__}"
            )
        return extractor

    def extract_features(self, obs: Any, features_extractor: BaseFeaturesExtractor) -> mx.array:
        """Preprocess ``obs`` and run the features extractor."""
        preprocessed = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        return features_extractor(preprocessed)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            normalize_images=self.normalize_images,
        )

    # -- parameters ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, mx.array]:
        """Flat ``{dotted.name: array}`` of every parameter."""
        from mlx_baselines3.common.save_util import module_state_dict

        return module_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Load parameters in place.

        :param strict: when True (default), a missing or unexpected key raises; shapes are always
            checked. The error names every offending key and nothing is loaded.
        """
        from mlx_baselines3.common.save_util import load_module_state

        load_module_state(self, state_dict, what=type(self).__name__, strict=strict)

    # Submodules that stay in evaluation mode whatever the policy's mode (target networks).
    eval_only_submodules: ClassVar[tuple[str, ...]] = ()

    def set_training_mode(self, mode: bool) -> None:
        """Put the policy in training or evaluation mode (dropout, batch norm).

        Submodules named in ``eval_only_submodules`` (target networks) are left in evaluation mode.

        Algorithms switch modes twice per iteration; walking the module tree with ``train()`` costs
        ~0.2 ms, so the list of submodules is kept while the direct children stay the same objects.
        """
        for name in self.eval_only_submodules:
            target = getattr(self, name)
            if target.training:  # also undoes a train() called on it directly
                target.train(False)
        if self.training == mode:
            return
        key = tuple(id(value) for value in self.values())
        if getattr(self, "_training_mode_key", None) != key:
            skipped = tuple(f"{name}." for name in self.eval_only_submodules)
            modules = [
                module
                for name, module in self.named_modules()
                if name not in self.eval_only_submodules and not name.startswith(skipped)
            ]
            # Modules that keep nn.Module's own _set_training_mode only store a flag: set it directly
            # (Module.__setattr__ costs ~2 us each); the others are called.
            plain: list[nn.Module] = []
            custom: list[nn.Module] = []
            for module in modules:
                overridden = type(module)._set_training_mode is not nn.Module._set_training_mode
                (custom if overridden else plain).append(module)
            object.__setattr__(self, "_training_mode_modules", (plain, custom))
            object.__setattr__(self, "_training_mode_key", key)
        plain, custom = self._training_mode_modules
        for module in plain:
            module.__dict__["_training"] = mode
        for module in custom:
            module._set_training_mode(mode)

    @property
    def device(self) -> mx.Device:
        return mx.default_device()

    # -- observations ----------------------------------------------------------------------------

    def is_vectorized_observation(self, observation: np.ndarray | dict[str, np.ndarray]) -> bool:
        """Whether ``observation`` holds a batch (one per env) or a single observation."""
        return is_vectorized_observation(observation, self.observation_space)

    def obs_to_tensor(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[Any, bool]:
        """NumPy observation(s) -> batched MLX array(s), and whether the input was a batch."""
        batch, vectorized_env = self.batched_observation(observation)
        return obs_as_mx(batch), vectorized_env

    def batched_observation(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[Any, bool]:
        """NumPy observation(s) -> a NumPy batch (dict of batches for Dict spaces), and whether the
        input was a batch. Raises a ValueError naming the problem for a wrong space or shape."""
        if isinstance(observation, dict):
            if not isinstance(self.observation_space, spaces.Dict):
                raise ValueError(
                    f"Got a dict observation but the observation space is {self.observation_space}"
                )
            missing = set(self.observation_space.spaces) - set(observation)
            if missing:
                raise ValueError(f"Observation dict is missing keys {sorted(missing)}")
            vectorized_env = False
            result = {}
            for key, sub_space in self.observation_space.spaces.items():
                obs = maybe_transpose(np.asarray(observation[key]), sub_space)
                vectorized_env = vectorized_env or is_vectorized_observation(obs, sub_space)
                result[key] = obs.reshape((-1, *(sub_space.shape or ())))
            return result, vectorized_env
        if isinstance(self.observation_space, spaces.Dict):
            raise ValueError(
                f"The observation space is a Dict {self.observation_space}: pass a dict observation"
            )
        obs = maybe_transpose(np.asarray(observation), self.observation_space)
        vectorized_env = self.is_vectorized_observation(obs)
        return obs.reshape((-1, *self.observation_space.shape)), vectorized_env

    # -- saving ----------------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Save the policy alone (constructor arguments as JSON + parameters)."""
        from mlx_baselines3.common.save_util import save_policy

        save_policy(self, path)

    @classmethod
    def load(cls: type[SelfBaseModel], path: str, device: Any = "auto", **kwargs: Any) -> SelfBaseModel:
        """Load a policy saved with :meth:`save`."""
        from mlx_baselines3.common.save_util import load_policy

        return load_policy(cls, path, **kwargs)


def is_vectorized_observation(observation: Any, observation_space: spaces.Space) -> bool:
    """SB3's check: is ``observation`` a batch for ``observation_space``? Raises on a wrong shape."""
    if isinstance(observation_space, spaces.Dict):
        if not isinstance(observation, dict):
            raise ValueError(f"Expected a dict observation for {observation_space}, got {type(observation)}")
        return any(
            is_vectorized_observation(np.asarray(observation[key]), sub)
            for key, sub in observation_space.spaces.items()
        )
    observation = np.asarray(observation)
    shape = observation.shape
    if isinstance(observation_space, spaces.Box):
        if shape == observation_space.shape:
            return False
        if shape[1:] == observation_space.shape:
            return True
        raise ValueError(
            f"Error: Unexpected observation shape {shape} for Box environment, please use "
            f"{observation_space.shape} or (n_env, {', '.join(map(str, observation_space.shape))}) "
            "for the observation shape."
        )
    if isinstance(observation_space, spaces.Discrete):
        if shape == ():
            return False
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            return True
        raise ValueError(
            f"Error: Unexpected observation shape {shape} for Discrete environment, please use () or (n_env,) "
            "for the observation shape."
        )
    if isinstance(observation_space, spaces.MultiDiscrete):
        n = len(observation_space.nvec)
        if shape == (n,):
            return False
        if len(shape) == 2 and shape[1] == n:
            return True
        raise ValueError(
            f"Error: Unexpected observation shape {shape} for MultiDiscrete environment, please use ({n},) or "
            f"(n_env, {n}) for the observation shape."
        )
    if isinstance(observation_space, spaces.MultiBinary):
        if shape == observation_space.shape:
            return False
        if shape[1:] == observation_space.shape:
            return True
        raise ValueError(
            f"Error: Unexpected observation shape {shape} for MultiBinary environment, please use "
            f"{observation_space.shape} or (n_env, {observation_space.n}) for the observation shape."
        )
    raise ValueError(
        f"Error: Cannot determine if the observation is vectorized with the space {observation_space}."
    )


class BasePolicy(BaseModel):
    """A model that maps observations to actions, with SB3's ``predict``.

    :param squash_output: whether actions are squashed to [-1, 1] (then rescaled to the bounds)
    """

    def __init__(self, *args: Any, squash_output: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_config(_squash_output=squash_output, _compiled_predict={})

    @property
    def squash_output(self) -> bool:
        return self._squash_output

    @abstractmethod
    def _predict(self, observation: Any, deterministic: bool = False) -> mx.array:
        """Actions for a batch of preprocessed-ready MLX observations."""

    def _predict_numpy(self, observation: Any, deterministic: bool) -> np.ndarray | None:
        """Actions computed with NumPy for a NumPy batch, or None to use the compiled MLX path.

        Policies whose action for a few observations is a small MLP override this (DQN's greedy
        action, TD3's deterministic actor): NumPy is several times cheaper than an MLX call there.
        """
        return None

    def _predict_compiled(self, observation: Any, deterministic: bool) -> mx.array:
        """``_predict`` compiled once per ``deterministic`` flag (policy + RNG state declared)."""
        fn = self._compiled_predict.get(deterministic)
        if fn is None:
            state = [self.state, mx.random.state]
            fn = mx.compile(partial(self._predict, deterministic=deterministic), inputs=state, outputs=state)
            self._compiled_predict[deterministic] = fn
        return fn(observation)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for one observation or a batch (SB3's signature; ``state`` is for recurrent policies).

        :return: the actions (in the env's action space) and the next hidden state (``None`` here)
        """
        self.set_training_mode(False)
        if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
            raise ValueError(
                "You have passed a tuple to the predict() function instead of a Numpy array or a Dict. "
                "You are probably mixing Gym API with SB3 VecEnv API: `obs, info = env.reset()` (Gym API) "
                "vs `obs = vec_env.reset()` (VecEnv API)."
            )
        batch, vectorized_env = self.batched_observation(observation)
        actions = self._predict_numpy(batch, deterministic)
        if actions is None:
            actions = np.array(self._predict_compiled(obs_as_mx(batch), deterministic))
        actions = actions.reshape((-1, *self.action_space.shape))
        actions = self.postprocess_actions(actions)
        if not vectorized_env:
            assert isinstance(actions, np.ndarray)
            actions = actions.squeeze(axis=0)
        return actions, state

    def postprocess_actions(self, actions: np.ndarray) -> np.ndarray:
        """Map network actions to the env's action space (rescale or clip Box actions)."""
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                actions = self.unscale_action(actions)
            else:
                actions = np.clip(actions, self.action_space.low, self.action_space.high)
            return actions.astype(self.action_space.dtype, copy=False)
        if isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete)):
            return actions.astype(np.int64, copy=False)
        return actions

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """Rescale an action from the action-space bounds to [-1, 1]."""
        assert isinstance(self.action_space, spaces.Box)
        low, high = self.action_space.low, self.action_space.high
        return 2.0 * ((action - low) / (high - low)) - 1.0

    def unscale_action(self, scaled_action: np.ndarray) -> np.ndarray:
        """Rescale an action from [-1, 1] to the action-space bounds."""
        assert isinstance(self.action_space, spaces.Box)
        low, high = self.action_space.low, self.action_space.high
        return low + 0.5 * (scaled_action + 1.0) * (high - low)


class ActorCriticPolicy(BasePolicy):
    """Policy and value networks sharing a features extractor (SB3's ``MlpPolicy`` for PPO/A2C).

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule (its value at 1 sets the initial learning rate)
    :param net_arch: ``[64, 64]`` or ``dict(pi=[...], vf=[...])``; default ``dict(pi=[64, 64], vf=[64, 64])``
    :param activation_fn: activation class (``mlx.nn.Tanh`` by default)
    :param ortho_init: orthogonal initialisation with gains sqrt(2) (trunk), 0.01 (action), 1 (value)
    :param use_sde: gSDE (not supported)
    :param log_std_init: initial log std of Gaussian actions
    :param full_std: gSDE option (ignored)
    :param use_expln: gSDE option (ignored)
    :param squash_output: squash actions with tanh (gSDE only, as in SB3)
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: keyword arguments for it
    :param share_features_extractor: one extractor for actor and critic
    :param normalize_images: scale uint8 images to [0, 1]
    :param optimizer_class: MLX optimizer class (Adam by default, with PyTorch-style bias correction)
    :param optimizer_kwargs: its keyword arguments (Adam: ``eps=1e-5`` by default, as SB3)
    :param value_head: ``"mse"`` (default, SB3's critic: one output trained with the mean squared
        error) or ``"twohot"`` (a distributional critic: ``K`` logits over fixed bins in symlog space,
        trained with the two-hot cross-entropy on the returns; see :meth:`evaluate_actions_and_value_loss`)
    :param value_head_kwargs: ``"twohot"`` only: ``num_bins`` (default 255), ``low`` / ``high``
        (default -20 / 20, in symlog units) and ``space`` (``"symlog"``, default, or ``"raw"``)
        of the :class:`~mlx_baselines3.world_models.TwoHot` bins
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[optim.Optimizer] = optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        value_head: str = "mse",
        value_head_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if optimizer_kwargs is None:
            optimizer_kwargs = {}
            if optimizer_class == optim.Adam:
                optimizer_kwargs["eps"] = 1e-5
        two_hot = make_value_head_bins(value_head, value_head_kwargs)
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=squash_output,
        )
        if isinstance(net_arch, list) and len(net_arch) > 0 and isinstance(net_arch[0], dict):
            warnings.warn(
                "As shared layers in the mlp_extractor are removed since SB3 v1.8.0, you should now pass "
                "directly a dictionary and not a list (net_arch=dict(pi=..., vf=...) instead of "
                "net_arch=[dict(pi=..., vf=...)])",
                stacklevel=2,
            )
            net_arch = net_arch[0]
        if net_arch is None:
            net_arch = [] if features_extractor_class == NatureCNN else dict(pi=[64, 64], vf=[64, 64])
        self._set_config(
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=use_sde,
            log_std_init=log_std_init,
            share_features_extractor=share_features_extractor,
            dist_kwargs=None,
            value_head=value_head,
            value_head_kwargs=dict(value_head_kwargs or {}),
            # A plain attribute, not a child array: the bins must not become parameters.
            _two_hot=two_hot,
        )
        self.features_extractor = self.make_features_extractor()
        self._set_config(features_dim=self.features_extractor.features_dim)
        if not share_features_extractor:
            self.vf_features_extractor = self.make_features_extractor()
        self._set_config(action_dist=make_proba_distribution(action_space, use_sde=use_sde))
        self._build(lr_schedule)

    @property
    def pi_features_extractor(self) -> BaseFeaturesExtractor:
        """The extractor of the actor (the shared one when ``share_features_extractor``)."""
        return self.features_extractor

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                use_sde=self.use_sde,
                log_std_init=self.log_std_init,
                squash_output=self.squash_output,
                ortho_init=self.ortho_init,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
                value_head=self.value_head,
                value_head_kwargs=self.value_head_kwargs,
            )
        )
        return data

    def _build_mlp_extractor(self) -> None:
        """Create the policy and value MLPs (override to use a custom network)."""
        self.mlp_extractor = MlpExtractor(
            self.features_dim, net_arch=self.net_arch, activation_fn=self.activation_fn
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()
        latent_dim_pi = self.mlp_extractor.latent_dim_pi
        if isinstance(self.action_dist, DiagGaussianDistribution):
            self.action_net, self.log_std = self.action_dist.proba_distribution_net(
                latent_dim=latent_dim_pi, log_std_init=self.log_std_init
            )
        elif isinstance(
            self.action_dist, (CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution)
        ):
            self.action_net = self.action_dist.proba_distribution_net(latent_dim=latent_dim_pi)
        else:
            raise NotImplementedError(f"Unsupported distribution '{self.action_dist}'.")
        latent_dim_vf = self.mlp_extractor.latent_dim_vf
        if self._two_hot is None:
            self.value_net = nn.Linear(latent_dim_vf, 1)
        else:
            self.value_net = nn.Linear(latent_dim_vf, self._two_hot.num_bins)
        if self.ortho_init:
            gains: list[tuple[nn.Module, float]] = [
                (self.features_extractor, math.sqrt(2)),
                (self.mlp_extractor, math.sqrt(2)),
                (self.action_net, 0.01),
            ]
            if self._two_hot is None:
                gains.append((self.value_net, 1.0))
            if not self.share_features_extractor:
                gains.append((self.vf_features_extractor, math.sqrt(2)))
            for module, gain in gains:
                orthogonal_init(module, gain)
        if self._two_hot is not None:
            # Zero-initialised two-hot layer (DreamerV3): uniform probabilities over symmetric bins
            # decode to exactly 0, so the first value predictions are 0 rather than an arbitrary
            # value that may be far off the return scale. Done after (and never overridden by)
            # the orthogonal init. The critic trunk gets its gradient once this layer has moved
            # (from the second update on).
            self.value_net.weight = mx.zeros_like(self.value_net.weight)
            self.value_net.bias = mx.zeros_like(self.value_net.bias)
        self.optimizer = make_optimizer(self.optimizer_class, lr_schedule(1), self.optimizer_kwargs)
        self.optimizer.init(self.trainable_parameters())

    # -- forward passes --------------------------------------------------------------------------

    def _latents(self, obs: Any) -> tuple[mx.array, mx.array]:
        if self.share_features_extractor:
            features = self.extract_features(obs, self.features_extractor)
            return self.mlp_extractor(features)
        pi_features = self.extract_features(obs, self.features_extractor)
        vf_features = self.extract_features(obs, self.vf_features_extractor)
        return self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def __call__(self, obs: Any, deterministic: bool = False) -> tuple[mx.array, mx.array, mx.array]:
        """Actions, values ``[B, 1]`` and log-probabilities for a batch of observations."""
        latent_pi, latent_vf = self._latents(obs)
        values = self._values_from_head(self.value_net(latent_vf))
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))
        return actions, values, log_prob

    def forward(self, obs: Any, deterministic: bool = False) -> tuple[mx.array, mx.array, mx.array]:
        """SB3's name for ``__call__``."""
        return self(obs, deterministic)

    def _get_action_dist_from_latent(self, latent_pi: mx.array) -> Distribution:
        mean_actions = self.action_net(latent_pi)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return self.action_dist.proba_distribution(mean_actions, self.log_std)
        return self.action_dist.proba_distribution(action_logits=mean_actions)

    def _predict(self, observation: Any, deterministic: bool = False) -> mx.array:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)

    def evaluate_actions(self, obs: Any, actions: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        """Values ``[B, 1]``, log-probabilities and entropy of ``actions`` under the current policy."""
        latent_pi, latent_vf = self._latents(obs)
        distribution = self._get_action_dist_from_latent(latent_pi)
        log_prob = distribution.log_prob(actions)
        values = self._values_from_head(self.value_net(latent_vf))
        return values, log_prob, distribution.entropy()

    def evaluate_actions_and_value_loss(
        self,
        obs: Any,
        actions: mx.array,
        returns: mx.array,
        old_values: mx.array | None = None,
        clip_range_vf: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array | None]:
        """The value loss, log-probabilities and entropy of ``actions``: what PPO's and A2C's losses need.

        ``"mse"`` head: ``mean((returns - V)^2)`` on :meth:`evaluate_actions`'s values, where ``V`` is
        first clipped to ``old_values ± clip_range_vf`` when ``clip_range_vf`` is given (SB3's
        value clipping). ``"twohot"`` head: the mean two-hot cross-entropy of the value logits
        against ``returns`` (:func:`~mlx_baselines3.world_models.twohot_value_loss`; with symlog bins
        the critic regresses ``symlog(returns)``, so the loss does not grow with the reward scale).

        :param obs: a batch of observations
        :param actions: the actions taken, shaped as :meth:`evaluate_actions` expects
        :param returns: the value targets ``[B]`` (raw scale)
        :param old_values: the values at collection time ``[B]`` (needed for ``clip_range_vf``)
        :param clip_range_vf: value-clipping range (``"mse"`` head only), an ``mx.array`` scalar
        :return: ``(value_loss, log_prob, entropy)``; ``entropy`` is None when the distribution has
            no closed form
        :raises ValueError: ``clip_range_vf`` with the two-hot head, or without ``old_values``
        """
        if clip_range_vf is not None and old_values is None:
            raise ValueError("evaluate_actions_and_value_loss: clip_range_vf needs old_values")
        if self._two_hot is None:
            values, log_prob, entropy = self.evaluate_actions(obs, actions)
            values = values.reshape(-1)
            if clip_range_vf is not None:
                assert old_values is not None
                values = old_values + mx.clip(values - old_values, -clip_range_vf, clip_range_vf)
            return ((returns - values) ** 2).mean(), log_prob, entropy
        if clip_range_vf is not None:
            raise ValueError(TWOHOT_CLIP_VF_ERROR)
        latent_pi, latent_vf = self._latents(obs)
        distribution = self._get_action_dist_from_latent(latent_pi)
        log_prob = distribution.log_prob(actions)
        value_loss = twohot_value_loss(self.value_net(latent_vf), returns.reshape(-1), self._two_hot)
        return value_loss, log_prob, distribution.entropy()

    def _values_from_head(self, head_output: mx.array) -> mx.array:
        """Values ``[B, 1]`` (raw scale) from the value layer's output (``[B, 1]`` or ``[B, K]`` logits)."""
        if self._two_hot is None:
            return head_output
        return twohot_values(head_output, self._two_hot)[..., None]

    def get_distribution(self, obs: Any) -> Distribution:
        """The action distribution for ``obs``."""
        features = self.extract_features(obs, self.pi_features_extractor)
        latent_pi = self.mlp_extractor.forward_actor(features)
        return self._get_action_dist_from_latent(latent_pi)

    def predict_values(self, obs: Any) -> mx.array:
        """Value estimates ``[B, 1]``."""
        extractor = self.features_extractor if self.share_features_extractor else self.vf_features_extractor
        features = self.extract_features(obs, extractor)
        return self._values_from_head(self.value_net(self.mlp_extractor.forward_critic(features)))


PolicyT = TypeVar("PolicyT", bound=BaseModel)


def with_features_extractor(
    base: type[PolicyT], extractor: type[BaseFeaturesExtractor], name: str, doc: str
) -> type[PolicyT]:
    """A subclass of ``base`` whose default ``features_extractor_class`` is ``extractor``.

    How every algorithm defines its ``CnnPolicy`` (NatureCNN) and ``MultiInputPolicy``
    (CombinedExtractor). The class is named ``name`` and lives in ``base``'s module, so saved models
    find it by import path.
    """

    def __init__(
        self: Any,
        *args: Any,
        features_extractor_class: type[BaseFeaturesExtractor] = extractor,
        **kwargs: Any,
    ):
        base.__init__(self, *args, features_extractor_class=features_extractor_class, **kwargs)  # type: ignore[misc]

    return type(
        name,
        (base,),
        {"__init__": __init__, "__doc__": doc, "__module__": base.__module__, "__qualname__": name},
    )


ActorCriticCnnPolicy = with_features_extractor(
    ActorCriticPolicy,
    NatureCNN,
    "ActorCriticCnnPolicy",
    "``ActorCriticPolicy`` with a NatureCNN features extractor (SB3's ``CnnPolicy``).",
)
MultiInputActorCriticPolicy = with_features_extractor(
    ActorCriticPolicy,
    CombinedExtractor,
    "MultiInputActorCriticPolicy",
    "``ActorCriticPolicy`` for Dict observations (SB3's ``MultiInputPolicy``).",
)


VALUE_HEADS = ("mse", "twohot")
TWOHOT_KWARGS = ("num_bins", "low", "high", "space")
TWOHOT_CLIP_VF_ERROR = (
    "clip_range_vf is not supported with value_head='twohot': the two-hot critic predicts a distribution "
    "over bins, and clipping its decoded value would give no gradient to the bins outside the clip range. "
    "Pass clip_range_vf=None (the two-hot loss is already insensitive to the reward scale)."
)


def make_value_head_bins(value_head: str, value_head_kwargs: dict[str, Any] | None) -> TwoHot | None:
    """Check ``value_head`` / ``value_head_kwargs`` and build the critic's bins (None for ``"mse"``).

    Defaults for ``"twohot"``: 255 bins over ``[-20, 20]`` in symlog space, as DreamerV3. The range
    covers returns up to ``symexp(20) ≈ 4.9e8`` in magnitude, so the head needs no tuning to the
    reward scale (its purpose); the bins are 0.157 symlog units apart, and a target between two
    bins is encoded exactly by interpolation. A symmetric range (``low == -high``) keeps the
    zero-initialised head's first predictions at exactly 0. Narrow the range (e.g. ``num_bins=101,
    low=-10, high=10``) when the returns are known to stay small.
    """
    if value_head not in VALUE_HEADS:
        raise ValueError(f"value_head must be one of {VALUE_HEADS}, got {value_head!r}")
    kwargs = dict(value_head_kwargs or {})
    if value_head == "mse":
        if kwargs:
            raise ValueError(f"value_head_kwargs are only used with value_head='twohot', got {kwargs}")
        return None
    unknown = sorted(set(kwargs) - set(TWOHOT_KWARGS))
    if unknown:
        raise ValueError(
            f"Unknown value_head_kwargs {unknown} for value_head='twohot': expected keys from {TWOHOT_KWARGS}"
        )
    return TwoHot(
        num_bins=kwargs.get("num_bins", 255),
        low=kwargs.get("low", -20.0),
        high=kwargs.get("high", 20.0),
        space=kwargs.get("space", "symlog"),
    )


def get_policy_from_name(policy_aliases: dict[str, type[BasePolicy]], name: str) -> type[BasePolicy]:
    """Resolve ``"MlpPolicy"`` etc. with a clear error listing the valid names."""
    if name not in policy_aliases:
        raise ValueError(
            f"Policy {name!r} unknown: choose one of {sorted(policy_aliases)} or pass a policy class"
        )
    return policy_aliases[name]


__all__ = [
    "ActorCriticCnnPolicy",
    "ActorCriticPolicy",
    "BaseModel",
    "BasePolicy",
    "MultiInputActorCriticPolicy",
    "is_image_space",
    "make_optimizer",
]


def __getattr__(name: str) -> Any:
    """SB3's import path ``common.policies.ContinuousCritic`` (defined in ``common/critics.py``)."""
    if name == "ContinuousCritic":
        from mlx_baselines3.common.critics import ContinuousCritic

        return ContinuousCritic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

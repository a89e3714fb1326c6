"""VecNormalize: running normalisation of observations and rewards.

Saved state uses the library's shared small-object format
(:func:`~mlx_baselines3.common.serialization.save_json_and_arrays`): a zip holding ``data.json``
(plain JSON: the settings, the dict keys, the counts) and ``arrays.safetensors`` (the running
means and variances), tagged ``"VecNormalize"``. Nothing is unpickled on load, the load is strict
(every statistic must be present, with the shape the wrapped env needs), and the file is written
to a temporary file in the same folder, synced and renamed into place, so a crash never leaves a
half-written file.
"""

from __future__ import annotations

import inspect
import os
from copy import deepcopy
from typing import IO, Any

import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.preprocessing import is_image_space
from mlx_baselines3.common.running_mean_std import RunningMeanStd
from mlx_baselines3.common.serialization import SaveFormatError, load_json_and_arrays, save_json_and_arrays
from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper

#: Tag of VecNormalize files (checked on load).
_KIND = "VecNormalize"
#: Version of the layout of ``data`` inside the file; a newer one is refused on load.
_FORMAT_VERSION = 1
#: Constructor settings stored in the file.
_CONFIG_KEYS = frozenset(
    {"training", "norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon", "norm_obs_keys"}
)


class VecNormalize(VecEnvWrapper):
    """Normalise observations and/or rewards with running statistics.

    Observations are standardised with their running mean and variance, then clipped to
    ``[-clip_obs, clip_obs]``. Rewards are divided by the running standard deviation of
    the discounted return (not the reward), then clipped to ``[-clip_reward, clip_reward]``.
    Statistics are only updated while ``training`` is True; set it to False when evaluating.

    :param venv: the VecEnv to wrap
    :param training: whether to update the running statistics
    :param norm_obs: whether to normalise observations
    :param norm_reward: whether to normalise rewards
    :param clip_obs: bound of the normalised observations
    :param clip_reward: bound of the normalised rewards
    :param gamma: discount factor of the return whose variance scales the rewards
    :param epsilon: added to the variances before the square root
    :param norm_obs_keys: which keys of a Dict observation space to normalise (default: all)
    """

    obs_spaces: dict[str, spaces.Space]
    old_obs: VecEnvObs
    old_reward: np.ndarray

    def __init__(
        self,
        venv: VecEnv,
        training: bool = True,
        norm_obs: bool = True,
        norm_reward: bool = True,
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        gamma: float = 0.99,
        epsilon: float = 1e-8,
        norm_obs_keys: list[str] | None = None,
    ):
        VecEnvWrapper.__init__(self, venv)
        self.norm_obs = norm_obs
        self.norm_obs_keys = list(norm_obs_keys) if norm_obs_keys is not None else None
        self.clip_obs = clip_obs
        # Normalised observations live in [-clip_obs, clip_obs]; image spaces must say so,
        # or the policy would treat them as uint8 images
        if self.norm_obs:
            self._sanity_checks()
            if isinstance(self.observation_space, spaces.Dict):
                assert self.norm_obs_keys is not None
                # Do not modify the wrapped env's space in place
                dict_space = deepcopy(self.observation_space)
                self.observation_space = dict_space
                self.obs_spaces = dict_space.spaces
                self.obs_rms: Any = {
                    key: RunningMeanStd(shape=self.obs_spaces[key].shape)  # type: ignore[arg-type]
                    for key in self.norm_obs_keys
                }
                for key in self.obs_rms:
                    if is_image_space(self.obs_spaces[key]):
                        dict_space.spaces[key] = spaces.Box(
                            low=-clip_obs, high=clip_obs, shape=self.obs_spaces[key].shape, dtype=np.float32
                        )
            else:
                self.obs_rms = RunningMeanStd(shape=self.observation_space.shape)  # type: ignore[arg-type]
                if is_image_space(self.observation_space):
                    self.observation_space = spaces.Box(
                        low=-clip_obs, high=clip_obs, shape=self.observation_space.shape, dtype=np.float32
                    )

        self.ret_rms = RunningMeanStd(shape=())
        self.clip_reward = clip_reward
        # Discounted return of each env, reset at episode ends
        self.returns = np.zeros(self.num_envs)
        self.gamma = gamma
        self.epsilon = epsilon
        self.training = training
        self.norm_reward = norm_reward
        self.old_obs = np.array([])
        self.old_reward = np.array([])

    def _sanity_checks(self) -> None:
        """Check that the observation space (and the keys to normalise) can be normalised."""
        if isinstance(self.observation_space, spaces.Dict):
            if self.norm_obs_keys is None:
                self.norm_obs_keys = list(self.observation_space.spaces.keys())
            for obs_key in self.norm_obs_keys:
                if obs_key not in self.observation_space.spaces:
                    raise ValueError(
                        f"norm_obs_keys names '{obs_key}', which is not a key of the observation space "
                        f"(keys: {list(self.observation_space.spaces.keys())})"
                    )
                if not isinstance(self.observation_space.spaces[obs_key], spaces.Box):
                    raise ValueError(
                        f"VecNormalize only supports `gym.spaces.Box` observation spaces but {obs_key} "
                        f"is of type {self.observation_space.spaces[obs_key]}. You should probably "
                        "explicitly pass the observation keys that should be normalized via the "
                        "`norm_obs_keys` parameter."
                    )
        elif isinstance(self.observation_space, spaces.Box):
            if self.norm_obs_keys is not None:
                raise ValueError(
                    "`norm_obs_keys` param is applicable only with `gym.spaces.Dict` observation spaces"
                )
        else:
            raise ValueError(
                "VecNormalize only supports `gym.spaces.Box` and `gym.spaces.Dict` observation spaces, "
                f"not {self.observation_space}"
            )

    # --- pickling (kept for deepcopy and for users who pickle the wrapper) ----------------

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the wrapped env (and the per-env returns)."""
        state = self.__dict__.copy()
        del state["venv"]
        del state["class_attributes"]
        del state["returns"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore; call :meth:`set_venv` before use."""
        self.__dict__.update(state)
        self.venv = None  # type: ignore[assignment]

    def set_venv(self, venv: VecEnv) -> None:
        """Attach a VecEnv to a wrapper that has none (after unpickling).

        :param venv: the VecEnv to wrap
        :raises ValueError: if a VecEnv is already attached or its observation space differs
        """
        if self.venv is not None:
            raise ValueError("Trying to set venv of already initialized VecNormalize wrapper.")
        self.venv = venv
        self.num_envs = venv.num_envs
        self.class_attributes = dict(inspect.getmembers(self.__class__))
        self.render_mode = venv.render_mode
        _check_shapes_match(self.observation_space, venv.observation_space)
        self.returns = np.zeros(self.num_envs)

    # --- VecEnv API ----------------------------------------------------------------------

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.old_obs = obs
        self.old_reward = rewards

        if self.training and self.norm_obs:
            self._update_obs_rms(obs)
        obs = self.normalize_obs(obs)

        if self.training:
            self._update_reward(rewards)
        rewards = self.normalize_reward(rewards)

        # The terminal observations are seen by the algorithm too (bootstrapping)
        for idx, done in enumerate(dones):
            if done and "terminal_observation" in infos[idx]:
                infos[idx]["terminal_observation"] = self.normalize_obs(infos[idx]["terminal_observation"])

        self.returns[dones] = 0
        return obs, rewards, dones, infos

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self.old_obs = obs
        self.returns = np.zeros(self.num_envs)
        if self.training and self.norm_obs:
            self._update_obs_rms(obs)
        return self.normalize_obs(obs)

    def _update_obs_rms(self, obs: VecEnvObs) -> None:
        if isinstance(obs, dict) and isinstance(self.obs_rms, dict):
            for key in self.obs_rms:
                self.obs_rms[key].update(obs[key])
        else:
            self.obs_rms.update(obs)

    def _update_reward(self, reward: np.ndarray) -> None:
        """Update the discounted returns and their running variance."""
        self.returns = self.returns * self.gamma + reward
        self.ret_rms.update(self.returns)

    # --- normalisation -------------------------------------------------------------------

    def _normalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        return np.clip(
            (obs - obs_rms.mean) / np.sqrt(obs_rms.var + self.epsilon), -self.clip_obs, self.clip_obs
        )

    def _unnormalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        return (obs * np.sqrt(obs_rms.var + self.epsilon)) + obs_rms.mean

    def normalize_obs(self, obs: VecEnvObs) -> np.ndarray | dict[str, np.ndarray]:
        """Normalise observations with the current statistics (they are not updated).

        :param obs: a batch of observations, a single observation, or a dict of them
        :return: the normalised observations, as float32
        """
        obs_: Any = deepcopy(obs)
        if self.norm_obs:
            if isinstance(obs, dict) and isinstance(self.obs_rms, dict):
                for key in self.obs_rms:
                    obs_[key] = self._normalize_obs(obs[key], self.obs_rms[key]).astype(np.float32)
            else:
                obs_ = self._normalize_obs(obs, self.obs_rms).astype(np.float32)  # type: ignore[arg-type]
        return obs_

    def normalize_reward(self, reward: np.ndarray) -> np.ndarray:
        """Scale rewards by the running std of the discounted return (not updated here).

        :param reward: rewards
        :return: the scaled and clipped rewards
        """
        if self.norm_reward:
            reward = np.clip(
                reward / np.sqrt(self.ret_rms.var + self.epsilon), -self.clip_reward, self.clip_reward
            )
        return reward

    def unnormalize_obs(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """Invert :meth:`normalize_obs` (exact where no clipping happened).

        :param obs: normalised observations
        :return: observations in the env's scale
        """
        obs_ = deepcopy(obs)
        if self.norm_obs:
            if isinstance(obs, dict) and isinstance(self.obs_rms, dict):
                assert isinstance(obs_, dict)
                for key in self.obs_rms:
                    obs_[key] = self._unnormalize_obs(obs[key], self.obs_rms[key])
            else:
                obs_ = self._unnormalize_obs(obs, self.obs_rms)  # type: ignore[arg-type]
        return obs_

    def unnormalize_reward(self, reward: np.ndarray) -> np.ndarray:
        """Invert :meth:`normalize_reward` (exact where no clipping happened)."""
        if self.norm_reward:
            return reward * np.sqrt(self.ret_rms.var + self.epsilon)
        return reward

    def get_original_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        """The observations of the last ``reset``/``step``, before normalisation."""
        return deepcopy(self.old_obs)  # type: ignore[return-value]

    def get_original_reward(self) -> np.ndarray:
        """The rewards of the last ``step``, before normalisation."""
        return self.old_reward.copy()

    # --- saving --------------------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The settings and statistics, as plain JSON data and named arrays.

        :return: (JSON-serialisable dict, dict of arrays)
        """
        config = {
            "training": bool(self.training),
            "norm_obs": bool(self.norm_obs),
            "norm_reward": bool(self.norm_reward),
            "clip_obs": float(self.clip_obs),
            "clip_reward": float(self.clip_reward),
            "gamma": float(self.gamma),
            "epsilon": float(self.epsilon),
            "norm_obs_keys": list(self.norm_obs_keys) if self.norm_obs_keys is not None else None,
        }
        arrays = {"ret_rms.mean": self.ret_rms.mean, "ret_rms.var": self.ret_rms.var}
        counts: dict[str, float] = {"ret_rms": float(self.ret_rms.count)}
        if self.norm_obs:
            for name, rms in self._named_obs_rms().items():
                arrays[f"{name}.mean"] = rms.mean
                arrays[f"{name}.var"] = rms.var
                counts[name] = float(rms.count)
        data = {"format_version": _FORMAT_VERSION, "config": config, "counts": counts}
        return data, {key: np.asarray(value, dtype=np.float64) for key, value in arrays.items()}

    def set_state(self, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Load statistics produced by :meth:`get_state` (strict: names and shapes must match).

        :param data: the JSON part
        :param arrays: the arrays
        :raises ValueError: naming any missing, unexpected or mis-shaped entry
        """
        expected = {"ret_rms": self.ret_rms}
        if self.norm_obs:
            expected.update(self._named_obs_rms())
        expected_arrays = {f"{name}.{part}" for name in expected for part in ("mean", "var")}
        missing = sorted(expected_arrays - set(arrays))
        unexpected = sorted(set(arrays) - expected_arrays)
        if missing or unexpected:
            raise ValueError(
                f"VecNormalize state does not match this wrapper: missing arrays {missing}, unexpected arrays {unexpected}"
            )
        counts = data.get("counts", {})
        for name, rms in expected.items():
            if name not in counts:
                raise ValueError(f"VecNormalize state has no count for '{name}'")
            for part in ("mean", "var"):
                value = np.asarray(arrays[f"{name}.{part}"], dtype=np.float64)
                if value.shape != rms.mean.shape:
                    raise ValueError(
                        f"VecNormalize state: '{name}.{part}' has shape {value.shape}, but this wrapper "
                        f"expects {rms.mean.shape} (observation space: {self.observation_space})"
                    )
        for name, rms in expected.items():
            rms.mean = np.array(arrays[f"{name}.mean"], dtype=np.float64)
            rms.var = np.array(arrays[f"{name}.var"], dtype=np.float64)
            rms.count = float(counts[name])

    def _named_obs_rms(self) -> dict[str, RunningMeanStd]:
        """The observation statistics under stable names (``obs_rms`` or ``obs_rms.<key>``)."""
        if isinstance(self.obs_rms, dict):
            return {f"obs_rms.{key}": rms for key, rms in self.obs_rms.items()}
        return {"obs_rms": self.obs_rms}

    def save(self, save_path: str | os.PathLike | IO[bytes]) -> None:
        """Save the settings and statistics (not the wrapped env), atomically and without pickle.

        The file is the shared small-object format of :func:`~mlx_baselines3.common.serialization.
        save_json_and_arrays`: a zip of ``data.json`` (settings and counts) and
        ``arrays.safetensors`` (the running means and variances), tagged ``"VecNormalize"``. The
        path is used as given (no suffix is added, as in SB3).

        :param save_path: file path, or a binary file object
        """
        data, arrays = self.get_state()
        save_json_and_arrays(save_path, data, arrays, kind=_KIND, suffix=None)

    @staticmethod
    def load(load_path: str | os.PathLike | IO[bytes], venv: VecEnv) -> VecNormalize:
        """Load a wrapper saved with :meth:`save` around ``venv`` (nothing is unpickled).

        :param load_path: file path, or a binary file object
        :param venv: the VecEnv to wrap
        :return: the wrapper, with the saved settings and statistics
        :raises ValueError: if the file is not a VecNormalize save (a ``SaveFormatError``), or its
            statistics do not match ``venv``'s observation space
        """
        data, arrays = load_json_and_arrays(load_path, kind=_KIND, suffix=None)
        source = repr(str(load_path)) if isinstance(load_path, (str, os.PathLike)) else "the file"
        if data.get("format_version", 0) > _FORMAT_VERSION:
            raise SaveFormatError(
                f"{source} was written by a newer version (VecNormalize format {data['format_version']}); "
                f"this version reads format {_FORMAT_VERSION}"
            )
        config = data.get("config")
        if not isinstance(config, dict):
            raise SaveFormatError(f"{source} is a VecNormalize file without its 'config' settings")
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise SaveFormatError(f"{source} has unknown VecNormalize settings {unknown}")
        vec_normalize = VecNormalize(venv, **config)
        vec_normalize.set_state(data, arrays)
        return vec_normalize


def _check_shapes_match(space1: spaces.Space, space2: spaces.Space) -> None:
    """Raise if the two observation spaces have different shapes (per key for Dict spaces)."""
    if isinstance(space1, spaces.Dict):
        if not isinstance(space2, spaces.Dict):
            raise ValueError(f"Observation spaces differ: {space1} vs {space2}")
        if space1.spaces.keys() != space2.spaces.keys():
            raise ValueError(f"Observation space keys differ: {list(space1.spaces)} vs {list(space2.spaces)}")
        for key in space1.spaces.keys():
            _check_shapes_match(space1.spaces[key], space2.spaces[key])
    elif space1.shape != space2.shape:
        raise ValueError(f"Observation space shapes differ: {space1.shape} vs {space2.shape}")

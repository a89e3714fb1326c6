"""VecExtractDictObs: keep one key of a Dict observation."""

from __future__ import annotations

from gymnasium import spaces

from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper


class VecExtractDictObs(VecEnvWrapper):
    """Replace a Dict observation by one of its entries (terminal observations included).

    :param venv: the VecEnv to wrap (Dict observation space)
    :param key: the key to keep
    """

    def __init__(self, venv: VecEnv, key: str):
        if not isinstance(venv.observation_space, spaces.Dict):
            raise TypeError(f"VecExtractDictObs needs a Dict observation space, got {venv.observation_space}")
        if key not in venv.observation_space.spaces:
            raise KeyError(
                f"VecExtractDictObs: '{key}' is not a key of the observation space "
                f"(keys: {list(venv.observation_space.spaces.keys())})"
            )
        self.key = key
        super().__init__(venv=venv, observation_space=venv.observation_space.spaces[self.key])

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        assert isinstance(obs, dict)
        return obs[self.key]

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, done, infos = self.venv.step_wait()
        assert isinstance(obs, dict)
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = info["terminal_observation"][self.key]
        return obs[self.key], reward, done, infos

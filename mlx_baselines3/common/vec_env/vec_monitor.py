"""VecMonitor: episode statistics recorded at the VecEnv level."""

from __future__ import annotations

import time
import warnings

import numpy as np

from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper


class VecMonitor(VecEnvWrapper):
    """Record episode returns, lengths and times of a VecEnv, as :class:`Monitor` does per env.

    Adds ``infos[i]["episode"] = {"r", "l", "t"}`` when env ``i`` finishes an episode and
    optionally writes one CSV row per episode. Useful for VecEnvs whose envs cannot be
    wrapped individually.

    :param venv: the VecEnv to wrap
    :param filename: where to write the CSV log (see :class:`Monitor`); None writes nothing
    :param info_keywords: keys of the last step's info to record in the log
    """

    def __init__(self, venv: VecEnv, filename: str | None = None, info_keywords: tuple[str, ...] = ()):
        from mlx_baselines3.common.monitor import Monitor, ResultsWriter

        try:
            is_wrapped_with_monitor = venv.env_is_wrapped(Monitor)[0]
        except AttributeError:
            is_wrapped_with_monitor = False
        if is_wrapped_with_monitor:
            warnings.warn(
                "The environment is already wrapped with a `Monitor` wrapper but you are wrapping it "
                "with a `VecMonitor` wrapper, the `Monitor` statistics will be overwritten by the "
                "`VecMonitor` ones.",
                UserWarning,
                stacklevel=2,
            )
        VecEnvWrapper.__init__(self, venv)
        self.episode_count = 0
        self.t_start = time.time()

        env_id = None
        spec = getattr(venv, "spec", None)
        if spec is not None:
            env_id = spec.id
        self.results_writer: ResultsWriter | None = None
        if filename:
            self.results_writer = ResultsWriter(
                filename,
                header={"t_start": self.t_start, "env_id": str(env_id)},
                extra_keys=tuple(info_keywords),
            )
        self.info_keywords = tuple(info_keywords)
        self.episode_returns = np.zeros(self.num_envs, dtype=np.float32)
        self.episode_lengths = np.zeros(self.num_envs, dtype=np.int32)

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self.episode_returns = np.zeros(self.num_envs, dtype=np.float32)
        self.episode_lengths = np.zeros(self.num_envs, dtype=np.int32)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.episode_returns += rewards
        self.episode_lengths += 1
        new_infos = list(infos[:])
        for i in range(len(dones)):
            if dones[i]:
                info = infos[i].copy()
                episode_info = {
                    "r": float(self.episode_returns[i]),
                    "l": int(self.episode_lengths[i]),
                    "t": round(time.time() - self.t_start, 6),
                }
                for key in self.info_keywords:
                    episode_info[key] = info[key]
                info["episode"] = episode_info
                self.episode_count += 1
                self.episode_returns[i] = 0
                self.episode_lengths[i] = 0
                if self.results_writer is not None:
                    self.results_writer.write_row(episode_info)
                new_infos[i] = info
        return obs, rewards, dones, new_infos

    def close(self) -> None:
        if self.results_writer is not None:
            self.results_writer.close()
        return self.venv.close()

"""Monitor: a Gymnasium wrapper that records episode returns, lengths and times.

At the end of each episode it adds ``info["episode"] = {"r": return, "l": length,
"t": seconds since the wrapper was created}`` and, with a ``filename``, appends one row to a
``*.monitor.csv`` file (SB3's format: a ``#{json header}`` line, then CSV with columns
``r,l,t`` and any extra keys).
"""

from __future__ import annotations

import csv
import json
import os
import time
from glob import glob
from typing import IO, TYPE_CHECKING, Any, SupportsFloat

import gymnasium as gym
from gymnasium.core import ActType, ObsType

if TYPE_CHECKING:
    import pandas

__all__ = ["Monitor", "ResultsWriter", "LoadMonitorResultsError", "get_monitor_files", "load_results"]


class Monitor(gym.Wrapper[ObsType, ActType, ObsType, ActType]):
    """Record episode statistics of an environment, optionally to a CSV file.

    :param env: the environment
    :param filename: where to write the CSV log: a folder (the file is ``<folder>/monitor.csv``)
        or a path prefix (the file is ``<filename>.monitor.csv``); None writes nothing
    :param allow_early_resets: allow ``reset()`` before the episode has ended
    :param reset_keywords: keyword arguments of ``reset()`` to record in the log
    :param info_keywords: keys of the last step's ``info`` to record in the log
    :param override_existing: overwrite an existing log file (True) or append to it (False)
    """

    EXT = "monitor.csv"

    def __init__(
        self,
        env: gym.Env,
        filename: str | None = None,
        allow_early_resets: bool = True,
        reset_keywords: tuple[str, ...] = (),
        info_keywords: tuple[str, ...] = (),
        override_existing: bool = True,
    ):
        super().__init__(env=env)
        self.t_start = time.time()
        self.results_writer: ResultsWriter | None = None
        if filename is not None:
            env_id = env.spec.id if env.spec is not None else None
            self.results_writer = ResultsWriter(
                filename,
                header={"t_start": self.t_start, "env_id": str(env_id)},
                extra_keys=tuple(reset_keywords) + tuple(info_keywords),
                override_existing=override_existing,
            )
        self.reset_keywords = tuple(reset_keywords)
        self.info_keywords = tuple(info_keywords)
        self.allow_early_resets = allow_early_resets
        self.rewards: list[float] = []
        self.needs_reset = True
        self.episode_returns: list[float] = []
        self.episode_lengths: list[int] = []
        self.episode_times: list[float] = []
        self.total_steps = 0
        # Values of the reset keywords of the current episode
        self.current_reset_info: dict[str, Any] = {}

    def reset(self, **kwargs: Any) -> tuple[ObsType, dict[str, Any]]:
        """Reset the environment; the values of ``reset_keywords`` must be passed.

        :param kwargs: keyword arguments of the wrapped env's reset
        :return: the first observation and the info dict
        """
        if not self.allow_early_resets and not self.needs_reset:
            raise RuntimeError(
                "Tried to reset an environment before done. If you want to allow early resets, "
                "wrap your env with Monitor(env, path, allow_early_resets=True)"
            )
        self.rewards = []
        self.needs_reset = False
        for key in self.reset_keywords:
            value = kwargs.get(key)
            if value is None:
                raise ValueError(f"Expected you to pass keyword argument {key} into reset")
            self.current_reset_info[key] = value
        return self.env.reset(**kwargs)

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the environment and record the reward.

        :param action: the action
        :return: observation, reward, terminated, truncated, info
        """
        if self.needs_reset:
            raise RuntimeError("Tried to step environment that needs reset")
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.rewards.append(float(reward))
        if terminated or truncated:
            self.needs_reset = True
            ep_rew = sum(self.rewards)
            ep_len = len(self.rewards)
            ep_info: dict[str, Any] = {
                "r": round(ep_rew, 6),
                "l": ep_len,
                "t": round(time.time() - self.t_start, 6),
            }
            for key in self.info_keywords:
                ep_info[key] = info[key]
            self.episode_returns.append(ep_rew)
            self.episode_lengths.append(ep_len)
            self.episode_times.append(time.time() - self.t_start)
            ep_info.update(self.current_reset_info)
            if self.results_writer is not None:
                self.results_writer.write_row(ep_info)
            info["episode"] = ep_info
        self.total_steps += 1
        return observation, reward, terminated, truncated, info

    def close(self) -> None:
        """Close the environment and the log file."""
        super().close()
        if self.results_writer is not None:
            self.results_writer.close()

    def get_total_steps(self) -> int:
        """Number of steps taken since the wrapper was created."""
        return self.total_steps

    def get_episode_rewards(self) -> list[float]:
        """Return of each finished episode."""
        return self.episode_returns

    def get_episode_lengths(self) -> list[int]:
        """Length of each finished episode."""
        return self.episode_lengths

    def get_episode_times(self) -> list[float]:
        """Time (seconds since creation) at which each episode finished."""
        return self.episode_times


class LoadMonitorResultsError(Exception):
    """Raised when no monitor file can be found or read."""


class ResultsWriter:
    """Write episode rows to a monitor CSV file.

    :param filename: a folder or a path prefix (``.monitor.csv`` is appended when missing)
    :param header: JSON-serialisable dict written on the first line after ``#``
    :param extra_keys: columns after ``r, l, t``
    :param override_existing: overwrite (True) or append to (False) an existing file
    """

    def __init__(
        self,
        filename: str = "",
        header: dict[str, float | str] | None = None,
        extra_keys: tuple[str, ...] = (),
        override_existing: bool = True,
    ):
        if header is None:
            header = {}
        if not filename.endswith(Monitor.EXT):
            if os.path.isdir(filename):
                filename = os.path.join(filename, Monitor.EXT)
            else:
                filename = filename + "." + Monitor.EXT
        filename = os.path.realpath(filename)
        os.makedirs(os.path.dirname(filename), exist_ok=True)
        mode = "w" if override_existing else "a"
        self.filename = filename
        self.file_handler: IO[str] = open(filename, f"{mode}t", newline="\n")  # noqa: SIM115
        self.logger = csv.DictWriter(self.file_handler, fieldnames=("r", "l", "t", *extra_keys))
        if override_existing or os.path.getsize(filename) == 0:
            self.file_handler.write(f"#{json.dumps(header)}\n")
            self.logger.writeheader()
        self.file_handler.flush()

    def write_row(self, epinfo: dict[str, float]) -> None:
        """Write one episode row and flush it to disk.

        :param epinfo: the episode info (``r``, ``l``, ``t`` and the extra keys)
        """
        if self.logger is not None:
            self.logger.writerow(epinfo)
            self.file_handler.flush()

    def close(self) -> None:
        """Close the file."""
        self.file_handler.close()


def get_monitor_files(path: str) -> list[str]:
    """List the monitor files in a folder.

    :param path: the folder
    :return: paths of the ``*monitor.csv`` files in it
    """
    return glob(os.path.join(path, "*" + Monitor.EXT))


def load_results(path: str) -> pandas.DataFrame:
    """Load all monitor files of a folder into one DataFrame (needs pandas).

    Rows are sorted by time; the ``t`` column is made relative to the earliest ``t_start``.

    :param path: the folder holding the ``*monitor.csv`` files
    :return: a DataFrame with columns ``r``, ``l``, ``t`` and any extra keys
    :raises LoadMonitorResultsError: if the folder has no monitor file
    """
    try:
        import pandas
    except ImportError as exc:
        raise ImportError("load_results needs pandas: pip install pandas") from exc

    monitor_files = get_monitor_files(path)
    if len(monitor_files) == 0:
        raise LoadMonitorResultsError(f"No monitor files of the form *{Monitor.EXT} found in {path}")
    data_frames, headers = [], []
    for file_name in monitor_files:
        with open(file_name) as file_handler:
            first_line = file_handler.readline()
            if not first_line.startswith("#"):
                raise LoadMonitorResultsError(
                    f"{file_name} is not a monitor file: its first line must start with '#'"
                )
            header = json.loads(first_line[1:])
            data_frame = pandas.read_csv(file_handler, index_col=None)
        headers.append(header)
        data_frame["t"] += header["t_start"]
        data_frames.append(data_frame)
    data_frame = pandas.concat(data_frames)
    data_frame = data_frame.sort_values("t")
    data_frame = data_frame.reset_index()
    data_frame["t"] -= min(header["t_start"] for header in headers)
    return data_frame

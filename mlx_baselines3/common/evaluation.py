"""``evaluate_policy``: run a policy for a number of episodes and report returns (SB3's semantics)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from mlx_baselines3.common import type_aliases
from mlx_baselines3.common.thread_placement import mlx_threads_on_one_core
from mlx_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, is_vecenv_wrapped


def evaluate_policy(
    model: type_aliases.PolicyPredictor,
    env: gym.Env | VecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    render: bool = False,
    callback: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    reward_threshold: float | None = None,
    return_episode_rewards: bool = False,
    warn: bool = True,
) -> tuple[float, float] | tuple[list[float], list[int]]:
    """Run ``model`` for ``n_eval_episodes`` episodes and return the mean and std of the returns.

    Episodes are spread evenly over the envs of a VecEnv (so that short episodes do not bias the
    result). When the env is wrapped in ``Monitor``, returns and lengths come from
    ``info["episode"]``, i.e. the unmodified episodes even if other wrappers alter rewards or end
    episodes early (e.g. Atari's life loss).

    :param model: anything with SB3's ``predict``
    :param env: a gymnasium env or a VecEnv
    :param n_eval_episodes: number of episodes
    :param deterministic: deterministic actions
    :param render: render the env
    :param callback: called after every step with ``(locals(), globals())``
    :param reward_threshold: assert that the mean return is at least this
    :param return_episode_rewards: return the per-episode returns and lengths instead
    :param warn: warn when the env is not wrapped in a Monitor
    :return: ``(mean_reward, std_reward)``, or ``(episode_rewards, episode_lengths)``
    """
    from mlx_baselines3.common.monitor import Monitor

    is_monitor_wrapped = False
    if not isinstance(env, VecEnv):
        env = DummyVecEnv([lambda: env])  # type: ignore[list-item,return-value]
    is_monitor_wrapped = is_vecenv_wrapped(env, VecMonitor) or env.env_is_wrapped(Monitor)[0]
    if not is_monitor_wrapped and warn:
        warnings.warn(
            "Evaluation environment is not wrapped with a ``Monitor`` wrapper. This may result in reporting "
            "modified episode lengths and rewards, if other wrappers happen to modify these. Consider wrapping "
            "environment first with ``Monitor`` wrapper.",
            UserWarning,
            stacklevel=2,
        )
    n_envs = env.num_envs
    episode_rewards: list[float] = []
    episode_lengths: list[int] = []
    episode_counts = np.zeros(n_envs, dtype="int")
    episode_count_targets = np.array([(n_eval_episodes + i) // n_envs for i in range(n_envs)], dtype="int")
    current_rewards = np.zeros(n_envs)
    current_lengths = np.zeros(n_envs, dtype="int")
    observations = env.reset()
    states = None
    episode_starts = np.ones((env.num_envs,), dtype=bool)
    with mlx_threads_on_one_core():  # each predict() evaluates a small MLX graph
        while (episode_counts < episode_count_targets).any():
            actions, states = model.predict(
                observations,  # type: ignore[arg-type]
                state=states,
                episode_start=episode_starts,
                deterministic=deterministic,
            )
            new_observations, rewards, dones, infos = env.step(actions)
            current_rewards += rewards
            current_lengths += 1
            for i in range(n_envs):
                if episode_counts[i] < episode_count_targets[i]:
                    reward, done, info = rewards[i], dones[i], infos[i]
                    episode_starts[i] = done
                    if callback is not None:
                        callback(locals(), globals())
                    if dones[i]:
                        if is_monitor_wrapped:
                            if "episode" in info.keys():
                                episode_rewards.append(float(info["episode"]["r"]))
                                episode_lengths.append(int(info["episode"]["l"]))
                                episode_counts[i] += 1
                        else:
                            episode_rewards.append(float(current_rewards[i]))
                            episode_lengths.append(int(current_lengths[i]))
                            episode_counts[i] += 1
                        current_rewards[i] = 0
                        current_lengths[i] = 0
            observations = new_observations
            if render:
                env.render()
    mean_reward = float(np.mean(episode_rewards))
    std_reward = float(np.std(episode_rewards))
    if reward_threshold is not None:
        assert mean_reward > reward_threshold, (
            f"Mean reward below threshold: {mean_reward:.2f} < {reward_threshold:.2f}"
        )
    if return_episode_rewards:
        return episode_rewards, episode_lengths
    return mean_reward, std_reward

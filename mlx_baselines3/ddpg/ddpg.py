"""Deep Deterministic Policy Gradient (Lillicrap et al., 2016): TD3 with one critic, no policy
delay and no target policy smoothing (SB3's definition)."""

from __future__ import annotations

from typing import Any, TypeVar

from mlx_baselines3.common.noise import ActionNoise
from mlx_baselines3.common.replay_buffer import ReplayBuffer
from mlx_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from mlx_baselines3.td3.policies import TD3Policy
from mlx_baselines3.td3.td3 import TD3

SelfDDPG = TypeVar("SelfDDPG", bound="DDPG")

__all__ = ["DDPG"]


class DDPG(TD3):
    """DDPG. Arguments as in SB3 (the TD3 tricks are switched off: ``policy_delay=1``,
    ``target_policy_noise=0``, a single critic).

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a policy class
    :param env: env, env id or VecEnv
    :param learning_rate: learning rate (float or schedule)
    :param buffer_size: replay buffer size
    :param learning_starts: random-action steps before learning
    :param batch_size: minibatch size
    :param tau: Polyak coefficient of the targets
    :param gamma: discount factor
    :param train_freq: train every ``train_freq`` steps or ``(n, "episode")``
    :param gradient_steps: gradient steps after each collection (-1: as many as env steps)
    :param action_noise: exploration noise
    :param replay_buffer_class: replay buffer class
    :param replay_buffer_kwargs: its keyword arguments
    :param optimize_memory_usage: memory-efficient replay buffer
    :param n_steps: n-step returns
    :param tensorboard_log: TensorBoard folder
    :param policy_kwargs: policy keyword arguments (``n_critics`` defaults to 1)
    :param verbose: verbosity
    :param seed: seed
    :param device: ``"auto"``, ``"cpu"`` or ``"gpu"``
    :param _init_setup_model: build the networks now
    """

    def __init__(
        self,
        policy: str | type[TD3Policy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: Any = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            # DDPG = TD3 without its three tricks
            policy_delay=1,
            target_noise_clip=0.0,
            target_policy_noise=0.0,
            _init_setup_model=False,
        )
        # One critic (SB3 sets it unless the user chose another value)
        if "n_critics" not in self.policy_kwargs:
            self.policy_kwargs["n_critics"] = 1
        if _init_setup_model:
            self._setup_model()

    def learn(
        self: SelfDDPG,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "DDPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDDPG:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

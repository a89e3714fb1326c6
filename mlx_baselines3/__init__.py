"""mlx_baselines3: Stable-Baselines3-compatible reinforcement learning on Apple's MLX."""

from mlx_baselines3.a2c import A2C
from mlx_baselines3.ddpg import DDPG
from mlx_baselines3.dqn import DQN
from mlx_baselines3.ppo import PPO
from mlx_baselines3.sac import SAC
from mlx_baselines3.td3 import TD3
from mlx_baselines3.version import __version__

__all__ = ["A2C", "DDPG", "DQN", "PPO", "SAC", "TD3", "__version__"]

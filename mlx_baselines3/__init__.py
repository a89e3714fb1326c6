"""mlx_baselines3: Stable-Baselines3-compatible reinforcement learning on Apple's MLX."""

from mlx_baselines3.a2c import A2C
from mlx_baselines3.ppo import PPO
from mlx_baselines3.version import __version__

__all__ = ["A2C", "PPO", "__version__"]

"""Deep Q-Network."""

from mlx_baselines3.dqn.dqn import DQN
from mlx_baselines3.dqn.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["DQN", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

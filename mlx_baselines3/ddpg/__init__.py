"""Deep Deterministic Policy Gradient."""

from mlx_baselines3.ddpg.ddpg import DDPG
from mlx_baselines3.td3.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["DDPG", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

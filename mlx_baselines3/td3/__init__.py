"""Twin Delayed DDPG."""

from mlx_baselines3.td3.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from mlx_baselines3.td3.td3 import TD3

__all__ = ["TD3", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

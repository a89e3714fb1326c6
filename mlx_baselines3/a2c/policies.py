"""A2C's policy aliases (the same actor-critic policies as PPO)."""

from mlx_baselines3.ppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

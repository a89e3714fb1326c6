from mlx_baselines3.ppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from mlx_baselines3.ppo.ppo import PPO, ppo_loss

__all__ = ["PPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "ppo_loss"]

from mlx_baselines3.a2c.a2c import A2C, a2c_loss
from mlx_baselines3.ppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["A2C", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "a2c_loss"]

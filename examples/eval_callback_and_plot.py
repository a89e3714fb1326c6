"""Train PPO on CartPole-v1 with an EvalCallback, a progress bar and a learning-curve plot.

    python examples/eval_callback_and_plot.py        # writes logs/ and docs/img/ppo_cartpole_curve.png
"""

import gymnasium as gym

from mlx_baselines3 import PPO
from mlx_baselines3.common import results_plotter
from mlx_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from mlx_baselines3.common.env_util import make_vec_env
from mlx_baselines3.common.monitor import Monitor

log_dir = "./logs/"
env = make_vec_env("CartPole-v1", n_envs=4, seed=0, monitor_dir=log_dir)
eval_callback = EvalCallback(
    Monitor(gym.make("CartPole-v1")),
    callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=475, verbose=1),
    eval_freq=2_500,  # counted in vectorised steps: every 10k timesteps with 4 envs
    n_eval_episodes=5,
    best_model_save_path=log_dir,
    log_path=log_dir,
)
model = PPO("MlpPolicy", env, verbose=0, seed=0)
model.learn(total_timesteps=100_000, callback=eval_callback, progress_bar=True)
best = PPO.load(log_dir + "best_model.zip")
results_plotter.plot_results(
    [log_dir], None, results_plotter.X_TIMESTEPS, "PPO CartPole-v1", save_path="docs/img/ppo_cartpole_curve.png"
)
print(f"Best mean reward: {eval_callback.best_mean_reward:.1f}; curve written to docs/img/ppo_cartpole_curve.png")

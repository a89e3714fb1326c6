"""PPO with CnnPolicy learns from pixels: an image version of SB3's identity env.

The env (``ImageIdentityEnv``) shows a uint8 image of noise (values 0..``noise``) with one bright
vertical stripe; the image is split into ``n_actions`` stripes and the bright one is the action that
is rewarded (reward 1, else 0). A new image is drawn every step; episodes last ``ep_length`` steps.
A random policy scores ``ep_length / n_actions`` on average, a perfect one ``ep_length``. The policy
must read the stripe position from the pixels through NatureCNN (the noise changes every step, so
nothing else predicts the reward).

What runs: PPO("CnnPolicy") with Atari-style hyperparameters scaled down (8 envs, n_steps 64,
batch 128, 4 epochs, lr 2.5e-4, clip 0.1, ent_coef 0.01) on 36x36x1 channel-last images (so
``VecTransposeImage`` is applied, as in SB3), for 24k steps by default. The table compares a uniform
random policy, the untrained network (deterministic) and the trained network (deterministic) on the
same evaluation episodes. The untrained deterministic policy maps each stripe position to one fixed
action, so its score is a matter of luck (anywhere from 0 to ``ep_length``); the random policy is
the chance baseline.

Usage:
  python benchmarks/ppo_image.py                      # default run (a few minutes on 2 CPU cores)
  python benchmarks/ppo_image.py --timesteps 50000 --seed 1 --n-actions 6
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import print_table  # noqa: E402


class ImageIdentityEnv(gym.Env):
    """Rewarded action = index of the bright vertical stripe of a noisy uint8 image.

    :param n_actions: number of actions (and stripes)
    :param size: image height and width
    :param ep_length: steps per episode
    :param noise: largest value of the background noise (the stripe is 255)
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n_actions: int = 4, size: int = 36, ep_length: int = 16, noise: int = 96) -> None:
        if size % n_actions:
            raise ValueError(f"size ({size}) must be a multiple of n_actions ({n_actions})")
        self.n_actions, self.size, self.ep_length, self.noise = n_actions, size, ep_length, noise
        self.observation_space = spaces.Box(0, 255, (size, size, 1), np.uint8)
        self.action_space = spaces.Discrete(n_actions)
        self.target = 0
        self.t = 0

    def _image(self) -> np.ndarray:
        self.target = int(self.np_random.integers(self.n_actions))
        image = self.np_random.integers(0, self.noise + 1, size=self.observation_space.shape, dtype=np.uint8)
        width = self.size // self.n_actions
        image[:, self.target * width : (self.target + 1) * width] = 255
        return image

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._image(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == self.target)
        self.t += 1
        return self._image(), reward, False, self.t >= self.ep_length, {}


def evaluate_returns(act: Any, n_episodes: int, seed: int, **env_kwargs: Any) -> np.ndarray:
    """Returns of ``n_episodes`` episodes where ``act(obs)`` picks each action."""
    env = ImageIdentityEnv(**env_kwargs)
    returns = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return np.asarray(returns)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timesteps", type=int, default=24_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-actions", type=int, default=4)
    parser.add_argument("--size", type=int, default=36)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=0.9, help="required trained return / ep_length")
    args = parser.parse_args()

    from mlx_baselines3 import PPO
    from mlx_baselines3.common.env_util import make_vec_env

    env_kwargs = dict(n_actions=args.n_actions, size=args.size)
    ep_length = ImageIdentityEnv(**env_kwargs).ep_length
    venv = make_vec_env(ImageIdentityEnv, n_envs=8, seed=args.seed, env_kwargs=env_kwargs)
    model = PPO(
        "CnnPolicy",
        venv,
        n_steps=64,
        batch_size=128,
        n_epochs=4,
        learning_rate=2.5e-4,
        clip_range=0.1,
        ent_coef=0.01,
        seed=args.seed,
        verbose=0,
    )
    print(
        f"PPO CnnPolicy on ImageIdentityEnv({args.size}x{args.size}x1 uint8, {args.n_actions} actions, "
        f"{ep_length} steps/episode) | {args.timesteps} steps | seed {args.seed} | "
        f"observation space seen by the policy: {model.observation_space.shape}"
    )
    eval_seed = 10_000
    rng = np.random.default_rng(args.seed)
    random_returns = evaluate_returns(
        lambda obs: int(rng.integers(args.n_actions)), args.eval_episodes, eval_seed, **env_kwargs
    )
    untrained = evaluate_returns(
        lambda obs: model.predict(obs, deterministic=True)[0], args.eval_episodes, eval_seed, **env_kwargs
    )
    start = time.perf_counter()
    model.learn(args.timesteps)
    seconds = time.perf_counter() - start
    trained = evaluate_returns(
        lambda obs: model.predict(obs, deterministic=True)[0], args.eval_episodes, eval_seed, **env_kwargs
    )
    rows = [
        ["random policy", random_returns.mean(), random_returns.std(), random_returns.mean() / ep_length],
        ["PPO CnnPolicy, untrained", untrained.mean(), untrained.std(), untrained.mean() / ep_length],
        ["PPO CnnPolicy, trained", trained.mean(), trained.std(), trained.mean() / ep_length],
    ]
    print(f"\nEvaluation: {args.eval_episodes} episodes (same seeds for each row), deterministic actions")
    print_table(["policy", "mean return", "std", "accuracy"], rows)
    print(f"Training: {seconds:.0f} s, {model.num_timesteps / seconds:.0f} FPS")
    passed = trained.mean() >= args.threshold * ep_length
    print(f"Required: trained accuracy >= {args.threshold}: {'PASS' if passed else 'FAIL'}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

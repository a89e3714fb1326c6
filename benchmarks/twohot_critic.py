"""PPO with a two-hot critic vs the plain (MSE) critic when the rewards are large.

The env is CartPole-v1 with every reward multiplied by 1000 (a gymnasium ``RewardWrapper``), and
there is no reward normalisation. PPO uses the RL-Zoo CartPole hyperparameters (8 envs, n_steps 32,
batch 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, learning rate linear from 1e-3, clip range
linear from 0.2) with either critic:

  mse     the default critic: one output trained with the mean squared error. The returns are of
          order 1e4, so the value loss starts around 1e8; its gradient dominates the global
          gradient-norm clipping (max_grad_norm 0.5), which shrinks the actor's share of each step.
  twohot  ``policy_kwargs=dict(value_head="twohot")``: 255 logits over bins in symlog space,
          trained with the two-hot cross-entropy, so the value loss is O(1) whatever the reward scale.
  twohot-raw  the same with ``value_head_kwargs=dict(space="raw")``: the bins are symexp of the
          symlog grid and the encoding / expectation happen on raw returns.

The evaluation runs on the unscaled CartPole-v1 (deterministic actions, 10 episodes), so the
returns are episode lengths (500 is the maximum). ``value_loss`` and ``explained_var`` are the
last update's ``train/value_loss`` (MSE in reward units squared, or the two-hot cross-entropy in
nats) and ``train/explained_variance``; ``train ep len`` is the mean length of the last 100
training episodes (stochastic actions). ``--reference`` adds the plain critic on the unscaled env.

Usage:
  python benchmarks/twohot_critic.py                        # 3 seeds, 100k steps, both heads
  python benchmarks/twohot_critic.py --timesteps 50000 --seeds 0 1 --reference

Runs are sequential, in this process (the machine is small and shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, SupportsFloat

import gymnasium as gym

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import evaluate, print_table  # noqa: E402

from mlx_baselines3 import PPO  # noqa: E402
from mlx_baselines3.common.env_util import make_vec_env  # noqa: E402

ZOO_KWARGS: dict[str, Any] = dict(
    n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0
)


HEADS: dict[str, dict[str, Any] | None] = {
    "mse": None,
    "twohot": dict(value_head="twohot"),
    "twohot-raw": dict(value_head="twohot", value_head_kwargs=dict(space="raw")),
}


class ScaleReward(gym.RewardWrapper):
    """Multiply every reward by ``scale``."""

    def __init__(self, env: gym.Env, scale: float) -> None:
        super().__init__(env)
        self.scale = scale

    def reward(self, reward: SupportsFloat) -> float:
        return float(reward) * self.scale


def linear(initial: float) -> Any:
    """``progress_remaining * initial`` (RL-Zoo's ``lin_<initial>``)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


def run(head: str, seed: int, timesteps: int, scale: float, eval_episodes: int) -> dict[str, Any]:
    """Train one PPO model and evaluate it on the unscaled CartPole."""
    env = make_vec_env(
        "CartPole-v1", n_envs=8, seed=seed, wrapper_class=ScaleReward, wrapper_kwargs=dict(scale=scale)
    )
    policy_kwargs = HEADS[head]
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        policy_kwargs=policy_kwargs,
        seed=seed,
        verbose=0,
        **ZOO_KWARGS,
    )
    start = time.perf_counter()
    # log_interval beyond the number of iterations: nothing is dumped, so the logger keeps the last
    # update's values.
    model.learn(total_timesteps=timesteps, log_interval=10**9)
    seconds = time.perf_counter() - start
    logged = model.logger.name_to_value
    return dict(
        eval_mean=evaluate(model, "CartPole-v1", n_episodes=eval_episodes),
        train_len=statistics.fmean([info["l"] for info in model.ep_info_buffer]),
        value_loss=float(logged.get("train/value_loss", float("nan"))),
        explained_var=float(logged.get("train/explained_variance", float("nan"))),
        seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--scale", type=float, default=1000.0, help="reward multiplier")
    parser.add_argument("--heads", nargs="+", default=["mse", "twohot"], choices=sorted(HEADS))
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--reference", action="store_true", help="also the plain critic on unscaled rewards")
    args = parser.parse_args()

    configs = [(head, args.scale) for head in args.heads]
    if args.reference:
        configs.append(("mse", 1.0))
    print(
        f"PPO (RL-Zoo CartPole settings), CartPole-v1 rewards x{args.scale:g}, no reward normalisation | "
        f"{args.timesteps} steps | seeds {args.seeds}"
    )
    rows: list[list[Any]] = []
    means: dict[tuple[str, float], list[float]] = {}
    for seed in args.seeds:
        for head, scale in configs:
            result = run(head, seed, args.timesteps, scale, args.eval_episodes)
            means.setdefault((head, scale), []).append(result["eval_mean"])
            rows.append(
                [
                    head,
                    f"x{scale:g}",
                    seed,
                    result["eval_mean"],
                    result["train_len"],
                    result["value_loss"],
                    result["explained_var"],
                    result["seconds"],
                ]
            )
            print(
                f"  {head:6s} x{scale:g} seed {seed}: eval {result['eval_mean']:.1f}, "
                f"value_loss {result['value_loss']:.3g}, {result['seconds']:.0f} s",
                flush=True,
            )
    print("\nPer run (eval mean = episode length on unscaled CartPole-v1, max 500):")
    print_table(
        ["head", "rewards", "seed", "eval mean", "train ep len", "value_loss", "explained_var", "seconds"],
        rows,
    )
    print("\nMean over seeds:")
    print_table(
        ["head", "rewards", "eval mean", "min", "max"],
        [[head, f"x{scale:g}", statistics.fmean(v), min(v), max(v)] for (head, scale), v in means.items()],
    )


if __name__ == "__main__":
    main()

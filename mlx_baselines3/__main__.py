"""Command line: train an agent on a registered env, evaluate it, optionally save it.

    python -m mlx_baselines3                       # PPO on CartPole-v1 (RL-Zoo settings), ~1 minute
    python -m mlx_baselines3 --algo a2c --timesteps 200000
    python -m mlx_baselines3 --algo ppo --env Pendulum-v1 --timesteps 50000 --save pendulum.zip

On Linux the command restarts itself once with a faster malloc preloaded: the mimalloc that pip
installed with the package, else a system jemalloc, tcmalloc or mimalloc (MLX_BASELINES3_MALLOC=0
turns that off; see mlx_baselines3/_malloc.py). For your own scripts:

    LD_PRELOAD=$(python -m mlx_baselines3 --print-malloc) python train.py
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

# RL-Zoo hyperparameters for CartPole-v1; other envs use the algorithm's defaults.
CARTPOLE_PRESETS: dict[str, dict[str, Any]] = {
    "ppo": dict(
        n_envs=8,
        kwargs=dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
                    learning_rate="lin_1e-3", clip_range="lin_0.2"),
    ),
    "a2c": dict(n_envs=8, kwargs=dict(ent_coef=0.0)),
}


def _resolve(value: Any) -> Any:
    from mlx_baselines3.common.utils import linear_schedule

    if isinstance(value, str) and value.startswith("lin_"):
        return linear_schedule(float(value[4:]))
    return value


def main(argv: list[str] | None = None) -> None:
    import mlx_baselines3
    from mlx_baselines3._malloc import find_fast_allocator, malloc_provider
    from mlx_baselines3.common.env_util import make_vec_env
    from mlx_baselines3.common.evaluation import evaluate_policy

    algos = {name.lower(): getattr(mlx_baselines3, name) for name in mlx_baselines3.__all__ if name.isupper()}
    parser = argparse.ArgumentParser(prog="python -m mlx_baselines3", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=sorted(algos))
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--save", default=None, help="path of the model zip to write")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--print-malloc", action="store_true",
                        help="print the path of the malloc library to preload (empty if none) and exit")
    args = parser.parse_args(argv)
    if args.print_malloc:
        print(find_fast_allocator() or "")
        return

    preset = CARTPOLE_PRESETS.get(args.algo, {}) if args.env == "CartPole-v1" else {}
    n_envs = args.n_envs or preset.get("n_envs", 1)
    kwargs = {key: _resolve(value) for key, value in preset.get("kwargs", {}).items()}
    env = make_vec_env(args.env, n_envs=n_envs, seed=args.seed)
    model = algos[args.algo]("MlpPolicy", env, seed=args.seed, verbose=args.verbose, **kwargs)
    print(f"Training {args.algo.upper()} on {args.env} for {args.timesteps} steps ({n_envs} envs, seed {args.seed})")
    provider = malloc_provider()
    if provider is not None:
        print(f"malloc: {provider}")
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    seconds = time.perf_counter() - start
    eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 1000)
    mean_reward, std_reward = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True)
    print(f"Trained in {seconds:.1f} s ({model.num_timesteps / seconds:.0f} steps/s)")
    print(f"Evaluation over {args.eval_episodes} episodes (deterministic): {mean_reward:.1f} +/- {std_reward:.1f}")
    if args.save:
        model.save(args.save)
        print(f"Saved to {args.save}")


if __name__ == "__main__":
    from mlx_baselines3._malloc import restart_with_fast_allocator

    if "--print-malloc" not in sys.argv[1:]:
        restart_with_fast_allocator()
    main()

"""PPO on CartPole-v1: learning quality (every seed must reach >= 475) and FPS, optionally against SB3.

Configurations:
  zoo      RL-Zoo hyperparameters: 8 envs, n_steps 32, batch 256, gae_lambda 0.8, gamma 0.98,
           n_epochs 20, ent_coef 0, learning rate linear from 1e-3, clip range linear from 0.2, 100k steps
  default  SB3's default PPO hyperparameters with 8 envs and n_steps 256

Usage:
  python benchmarks/ppo_cartpole.py                       # zoo config, 3 seeds, this package only
  SB3_PYTHON=/path/to/venv/bin/python python benchmarks/ppo_cartpole.py --config zoo default
  python benchmarks/ppo_cartpole.py --timesteps 20000 --seeds 0   # a quick look

SB3 runs (when an interpreter that imports stable_baselines3 is found) alternate with this
package's runs in the same invocation, each in its own process, torch pinned to 1 thread.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    add_peer_arguments,
    evaluate,
    handle_worker,
    import_library,
    median,
    peer_python,
    print_table,
    run_worker,
    timed_learn,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "zoo": dict(
        n_envs=8,
        timesteps=100_000,
        kwargs=dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=("lin", 1e-3),
            clip_range=("lin", 0.2),
        ),
    ),
    # Speed comparison only (SB3's defaults are not tuned for CartPole: no reward requirement)
    "default": dict(n_envs=8, timesteps=100_000, kwargs=dict(n_steps=256), speed_only=True),
}


def _linear(initial: float) -> Any:
    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


def worker(library: str, job: dict[str, Any]) -> dict[str, Any]:
    lib = import_library(library)
    from gymnasium.wrappers import TimeLimit  # noqa: F401  (imported for parity of start-up costs)

    if library == "sb3":
        from stable_baselines3.common.env_util import make_vec_env
    else:
        from mlx_baselines3.common.env_util import make_vec_env
    config = CONFIGS[job["config"]]
    kwargs = dict(config["kwargs"])
    for key in ("learning_rate", "clip_range"):
        if isinstance(kwargs.get(key), (list, tuple)):
            kwargs[key] = _linear(kwargs[key][1])
    env = make_vec_env("CartPole-v1", n_envs=config["n_envs"], seed=job["seed"])
    model = lib.PPO("MlpPolicy", env, seed=job["seed"], verbose=0, **kwargs)
    timesteps = job.get("timesteps") or config["timesteps"]
    seconds = timed_learn(model, timesteps)
    return {
        "fps": model.num_timesteps / seconds,
        "seconds": seconds,
        "eval_mean": evaluate(model, "CartPole-v1", n_episodes=job.get("eval_episodes", 10)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", nargs="+", default=["zoo"], choices=sorted(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=None, help="override the config's total timesteps")
    parser.add_argument("--threshold", type=float, default=475.0)
    add_peer_arguments(parser)
    args = parser.parse_args()
    if handle_worker(args, worker):
        return

    sb3_python = peer_python(args)
    script = os.path.abspath(__file__)
    print(
        f"PPO CartPole-v1 | configs {args.config} | seeds {args.seeds} | SB3: {sb3_python or 'not available'}"
    )
    rows, failed = [], False
    summary = []
    for config in args.config:
        results: dict[str, list[dict[str, Any]]] = {"mlx": [], "sb3": []}
        for seed in args.seeds:
            job = {"config": config, "seed": seed, "timesteps": args.timesteps}
            libraries = ["mlx", "sb3"] if sb3_python else ["mlx"]
            if seed % 2 == 1:
                libraries.reverse()  # alternate who runs first
            for library in libraries:
                python = sys.executable if library == "mlx" else sb3_python
                result = run_worker(python, script, library, job)  # type: ignore[arg-type]
                results[library].append(result)
                rows.append([config, library, seed, result["fps"], result["seconds"], result["eval_mean"]])
                print(
                    f"  {config} {library} seed {seed}: {result['fps']:.0f} FPS, eval {result['eval_mean']:.1f}"
                )
                if (
                    library == "mlx"
                    and not CONFIGS[config].get("speed_only")
                    and result["eval_mean"] < args.threshold
                ):
                    failed = True
        mlx_fps = median([r["fps"] for r in results["mlx"]])
        sb3_fps = median([r["fps"] for r in results["sb3"]])
        summary.append(
            [
                config,
                mlx_fps,
                sb3_fps,
                mlx_fps / sb3_fps if results["sb3"] else float("nan"),
                min(r["eval_mean"] for r in results["mlx"]),
            ]
        )
    print("\nPer run:")
    print_table(["config", "library", "seed", "FPS", "seconds", "eval mean"], rows)
    print("\nSummary (medians over seeds; ratio = mlx FPS / SB3 FPS):")
    print_table(["config", "mlx FPS", "SB3 FPS", "ratio", "worst mlx eval"], summary)
    print(f"Required (zoo config): every mlx seed >= {args.threshold}: {'FAIL' if failed else 'PASS'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

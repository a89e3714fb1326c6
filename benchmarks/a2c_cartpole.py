"""A2C on CartPole-v1 with RL-Zoo hyperparameters: learning quality (every seed >= 475) and FPS, optionally vs SB3.

Configuration (RL Zoo, ``hyperparams/a2c.yml``): 8 envs, 500k timesteps, ``ent_coef=0.0``, every
other argument at A2C's defaults (n_steps 5, learning rate 7e-4, gamma 0.99, gae_lambda 1.0,
vf_coef 0.5, max_grad_norm 0.5, RMSprop with alpha 0.99 and eps 1e-5, no advantage normalisation).

Each seed is trained in its own process; the model is then evaluated on 10 deterministic episodes
of a fresh ``CartPole-v1`` (seeds 1000..1009). When an interpreter that imports stable_baselines3 is
found (``--sb3-python`` or ``$SB3_PYTHON``), SB3 runs the same job in the same invocation, alternating
which library goes first, torch pinned to one thread; the table then shows the FPS ratio.

Usage:
  python benchmarks/a2c_cartpole.py                                    # 3 seeds, this package only
  python benchmarks/a2c_cartpole.py --sb3-python /work/sb3venv/bin/python
  python benchmarks/a2c_cartpole.py --timesteps 50000 --seeds 0        # a quick look

Runs are sequential (never in parallel), so that FPS figures are not disturbed by each other.
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

ENV_ID = "CartPole-v1"
N_ENVS = 8
TIMESTEPS = 500_000
# RL Zoo: only ent_coef differs from the constructor defaults (and it equals the default, 0.0).
ZOO_KWARGS: dict[str, Any] = dict(ent_coef=0.0)


def worker(library: str, job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one seed; runs inside a fresh process of the chosen library."""
    lib = import_library(library)
    if library == "sb3":
        from stable_baselines3.common.env_util import make_vec_env
    else:
        from mlx_baselines3.common.env_util import make_vec_env
    env = make_vec_env(ENV_ID, n_envs=N_ENVS, seed=job["seed"])
    model = lib.A2C("MlpPolicy", env, seed=job["seed"], verbose=0, **ZOO_KWARGS)
    seconds = timed_learn(model, job["timesteps"])
    return {
        "fps": model.num_timesteps / seconds,
        "seconds": seconds,
        "eval_mean": evaluate(model, ENV_ID, n_episodes=job["eval_episodes"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=475.0)
    add_peer_arguments(parser)
    args = parser.parse_args()
    if handle_worker(args, worker):
        return

    sb3_python = peer_python(args)
    script = os.path.abspath(__file__)
    print(
        f"A2C {ENV_ID} (RL-Zoo: {N_ENVS} envs, {args.timesteps} steps, ent_coef 0.0) | seeds {args.seeds} | "
        f"SB3: {sb3_python or 'not available'}"
    )
    results: dict[str, dict[int, dict[str, Any]]] = {"mlx": {}, "sb3": {}}
    failed = False
    for seed in args.seeds:
        job = {"seed": seed, "timesteps": args.timesteps, "eval_episodes": args.eval_episodes}
        libraries = ["mlx", "sb3"] if sb3_python else ["mlx"]
        if seed % 2 == 1:
            libraries.reverse()  # alternate who runs first
        for library in libraries:
            python = sys.executable if library == "mlx" else sb3_python
            assert python is not None
            result = run_worker(python, script, library, job)
            results[library][seed] = result
            print(
                f"  {library} seed {seed}: {result['fps']:.0f} FPS, {result['seconds']:.0f} s, "
                f"eval {result['eval_mean']:.1f}",
                flush=True,
            )
            if library == "mlx" and result["eval_mean"] < args.threshold:
                failed = True

    rows = []
    for seed in args.seeds:
        mlx, sb3 = results["mlx"][seed], results["sb3"].get(seed)
        rows.append(
            [
                seed,
                mlx["fps"],
                mlx["eval_mean"],
                sb3["fps"] if sb3 else float("nan"),
                sb3["eval_mean"] if sb3 else float("nan"),
                mlx["fps"] / sb3["fps"] if sb3 else float("nan"),
            ]
        )
    mlx_fps = median([r["fps"] for r in results["mlx"].values()])
    sb3_fps = median([r["fps"] for r in results["sb3"].values()])
    rows.append(
        [
            "median",
            mlx_fps,
            median([r["eval_mean"] for r in results["mlx"].values()]),
            sb3_fps,
            median([r["eval_mean"] for r in results["sb3"].values()]),
            mlx_fps / sb3_fps if results["sb3"] else float("nan"),
        ]
    )
    print()
    print_table(["seed", "mlx FPS", "mlx eval", "SB3 FPS", "SB3 eval", "FPS ratio mlx/SB3"], rows)
    print(
        f"Required: every mlx seed >= {args.threshold} deterministic eval mean: {'FAIL' if failed else 'PASS'}"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

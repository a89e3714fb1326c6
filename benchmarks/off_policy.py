"""Off-policy learning quality and FPS: SAC and TD3 on Pendulum-v1, DQN on CartPole-v1, optionally vs SB3.

Configurations (the same for both libraries):

- SAC, Pendulum-v1, 20k steps: ``learning_rate=1e-3``, every other argument at SAC's defaults.
  Required: every seed >= -250 mean deterministic return.
- TD3, Pendulum-v1, 20k steps: ``learning_rate=1e-3``, ``gamma=0.98``, ``learning_starts=1000``,
  Gaussian action noise of std 0.1 (RL-Zoo style), other arguments at TD3's defaults.
  Required: every seed >= -250.
- DQN, CartPole-v1, 50k steps, RL-Zoo hyperparameters: ``learning_rate=2.3e-3``,
  ``batch_size=64``, ``buffer_size=100_000``, ``learning_starts=1000``, ``gamma=0.99``,
  ``target_update_interval=10``, ``train_freq=256``, ``gradient_steps=128``,
  ``exploration_fraction=0.16``, ``exploration_final_eps=0.04``, ``net_arch=[256, 256]``.
  Required: every seed >= 450.

Each (algorithm, seed) is trained in its own process and evaluated on 10 deterministic episodes of
a fresh env (seeds 1000..1009). FPS is env steps per second of the whole ``learn`` call (first
compilation included). When an interpreter that imports stable_baselines3 is found
(``--sb3-python`` or ``$SB3_PYTHON``), SB3 runs the same jobs in the same invocation, alternating
which library goes first, torch pinned to one thread, and the table shows the FPS ratio.

Usage:
  python benchmarks/off_policy.py                                  # everything, 3 seeds
  python benchmarks/off_policy.py --algos sac --seeds 0            # one run
  python benchmarks/off_policy.py --quick                          # a shorter look (no thresholds)
  python benchmarks/off_policy.py --sb3-python /path/to/python     # with the SB3 comparison
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    DQN_CARTPOLE_ZOO,
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

# name -> class, env, steps, threshold, constructor kwargs (action noise std handled separately)
SETUPS: dict[str, dict[str, Any]] = {
    "sac": dict(
        cls="SAC", env="Pendulum-v1", steps=20_000, threshold=-250.0, kwargs=dict(learning_rate=1e-3)
    ),
    "td3": dict(
        cls="TD3",
        env="Pendulum-v1",
        steps=20_000,
        threshold=-250.0,
        kwargs=dict(learning_rate=1e-3, gamma=0.98, learning_starts=1000),
        noise_std=0.1,
    ),
    "dqn": dict(
        cls="DQN",
        env="CartPole-v1",
        steps=50_000,
        threshold=450.0,
        kwargs=DQN_CARTPOLE_ZOO,
    ),
}


def worker(library: str, job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one (algorithm, seed); runs inside a fresh process of the chosen library."""
    import numpy as np

    lib = import_library(library)
    setup = SETUPS[job["algo"]]
    kwargs = dict(setup["kwargs"])
    if "noise_std" in setup:
        noise_module = "stable_baselines3.common.noise" if library == "sb3" else "mlx_baselines3.common.noise"
        noise_cls = __import__(noise_module, fromlist=["NormalActionNoise"]).NormalActionNoise
        kwargs["action_noise"] = noise_cls(np.zeros(1), setup["noise_std"] * np.ones(1))
    model = getattr(lib, setup["cls"])("MlpPolicy", setup["env"], seed=job["seed"], verbose=0, **kwargs)
    seconds = timed_learn(model, job["timesteps"])
    return {
        "fps": model.num_timesteps / seconds,
        "seconds": seconds,
        "eval_mean": evaluate(model, setup["env"], n_episodes=job["eval_episodes"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algos", nargs="+", choices=sorted(SETUPS), default=["sac", "td3", "dqn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps; thresholds not checked")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--json", default=None, help="write every result to this JSON file")
    add_peer_arguments(parser)
    args = parser.parse_args()
    if handle_worker(args, worker):
        return

    sb3_python = peer_python(args)
    script = os.path.abspath(__file__)
    print(
        f"Off-policy benchmark | algos {args.algos} | seeds {args.seeds} | SB3: {sb3_python or 'not available'}"
    )
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    failed = []
    for algo in args.algos:
        setup = SETUPS[algo]
        timesteps = setup["steps"] // 4 if args.quick else setup["steps"]
        for seed in args.seeds:
            job = {"algo": algo, "seed": seed, "timesteps": timesteps, "eval_episodes": args.eval_episodes}
            libraries = ["mlx", "sb3"] if sb3_python else ["mlx"]
            if seed % 2 == 1:
                libraries.reverse()  # alternate who runs first
            for library in libraries:
                python = sys.executable if library == "mlx" else sb3_python
                assert python is not None
                result = run_worker(python, script, library, job)
                result["timesteps"] = timesteps
                results[(algo, library, seed)] = result
                print(
                    f"  {algo} {library} seed {seed}: {timesteps} steps, {result['fps']:.0f} FPS, "
                    f"{result['seconds']:.0f} s, eval {result['eval_mean']:.1f}",
                    flush=True,
                )
                if library == "mlx" and not args.quick and result["eval_mean"] < setup["threshold"]:
                    failed.append(f"{algo} seed {seed}")

    rows = []
    for algo in args.algos:
        for seed in args.seeds:
            mlx, sb3 = results[(algo, "mlx", seed)], results.get((algo, "sb3", seed))
            rows.append(
                [
                    algo,
                    seed,
                    mlx["timesteps"],
                    mlx["fps"],
                    mlx["eval_mean"],
                    SETUPS[algo]["threshold"],
                    sb3["fps"] if sb3 else float("nan"),
                    sb3["eval_mean"] if sb3 else float("nan"),
                    mlx["fps"] / sb3["fps"] if sb3 else float("nan"),
                ]
            )
        mlx_runs = [results[(algo, "mlx", s)] for s in args.seeds]
        sb3_runs = [results[(algo, "sb3", s)] for s in args.seeds if (algo, "sb3", s) in results]
        mlx_fps, sb3_fps = median([r["fps"] for r in mlx_runs]), median([r["fps"] for r in sb3_runs])
        rows.append(
            [
                algo,
                "median",
                "",
                mlx_fps,
                median([r["eval_mean"] for r in mlx_runs]),
                "",
                sb3_fps,
                median([r["eval_mean"] for r in sb3_runs]),
                mlx_fps / sb3_fps if sb3_runs else float("nan"),
            ]
        )
    print()
    print_table(
        [
            "algo",
            "seed",
            "steps",
            "mlx FPS",
            "mlx eval",
            "required",
            "SB3 FPS",
            "SB3 eval",
            "FPS ratio mlx/SB3",
        ],
        rows,
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({f"{a}/{lib}/{s}": r for (a, lib, s), r in results.items()}, file, indent=1)
    if args.quick:
        print("Quick run: thresholds not checked")
        return
    print("Required (every mlx seed): " + ("FAIL: " + ", ".join(failed) if failed else "PASS"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

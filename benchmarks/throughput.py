"""Training throughput (env steps per second) of this package against Stable-Baselines3, same machine,
same hyperparameters, same run.

Each measurement is a fresh process: build the model, warm up (``learn(warmup)``: first compile,
buffers filled past ``learning_starts``), then time ``learn(steps, reset_num_timesteps=False)``.
The two libraries alternate, ``--reps`` times each; the table shows medians and the ratio
(this package's FPS / SB3's FPS), and the median and range of the per-rep ratios (each rep's two
runs are back to back, so their ratio is less affected by a shared machine's speed drifting).
SB3 runs from another interpreter (``--sb3-python`` or ``$SB3_PYTHON``) with torch pinned to 1
thread.

This package's runs use the second core for the BLAS's share of large products. Before and after
each of its timed runs a probe (``_harness.two_core_gain``) times a 256x256x256 product on one
thread and on the BLAS's threads; a second table splits the paired ratios by whether the second
core helped (both probes at least ``TWO_CORE_GAIN_THRESHOLD``). On a virtual machine whose host
sometimes places the two virtual CPUs far apart, that split separates the host's two states.

  python benchmarks/throughput.py                        # all algorithms, 3 reps
  python benchmarks/throughput.py --algos ppo sac --reps 5 --plot throughput.png
  python benchmarks/throughput.py --algos ppo --profile   # where an iteration's time goes (this package)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    DQN_CARTPOLE_ZOO,
    TWO_CORE_GAIN_THRESHOLD,
    add_peer_arguments,
    cpu_summary,
    handle_worker,
    import_library,
    machine_summary,
    median,
    peer_python,
    print_table,
    run_worker,
    two_core_gain,
)

# name -> (class name, env id, n_envs, constructor kwargs, warmup steps, timed steps)
SETUPS: dict[str, dict[str, Any]] = {
    "ppo": dict(cls="PPO", env="CartPole-v1", n_envs=8, kwargs=dict(n_steps=256), warmup=2048, steps=16384),
    "a2c": dict(cls="A2C", env="CartPole-v1", n_envs=8, kwargs=dict(), warmup=2000, steps=20000),
    "sac": dict(cls="SAC", env="Pendulum-v1", n_envs=1, kwargs=dict(), warmup=300, steps=1500),
    "td3": dict(cls="TD3", env="Pendulum-v1", n_envs=1, kwargs=dict(), warmup=300, steps=1500),
    "dqn": dict(
        cls="DQN",
        env="CartPole-v1",
        n_envs=1,
        kwargs=DQN_CARTPOLE_ZOO,
        warmup=1280,
        steps=5120,
    ),
}


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        setattr(owner, name, timed)


def _install_profile(model: Any, timer: _Timer) -> None:
    """Time the parts of an iteration: env step, action selection, buffer writes, update."""
    timer.wrap(model.env, "step", "env step")
    timer.wrap(model, "train", "update (train)")
    for name in ("_select_actions", "_sample_action"):
        if hasattr(model, name):
            timer.wrap(model, name, "action selection")
    for buffer_name in ("rollout_buffer", "replay_buffer"):
        buffer = getattr(model, buffer_name, None)
        if buffer is not None:
            timer.wrap(buffer, "add", "buffer add")
            if hasattr(buffer, "compute_returns_and_advantage"):
                timer.wrap(buffer, "compute_returns_and_advantage", "GAE")


def worker(library: str, job: dict[str, Any]) -> dict[str, Any]:
    lib = import_library(library)
    setup = SETUPS[job["algo"]]
    env_util = __import__(f"{lib.__name__}.common.env_util", fromlist=["make_vec_env"])
    env = env_util.make_vec_env(setup["env"], n_envs=setup["n_envs"], seed=job["seed"])
    model = getattr(lib, setup["cls"])("MlpPolicy", env, seed=job["seed"], verbose=0, **setup["kwargs"])
    model.learn(setup["warmup"])
    timer = _Timer()
    if job.get("profile"):
        _install_profile(model, timer)
    # This package only (SB3 runs on one thread): did the host keep the two cores close?
    probe = two_core_gain if library == "mlx" else lambda: None
    gains = [probe()]
    start = time.perf_counter()
    before = model.num_timesteps
    model.learn(setup["steps"], reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    gains.append(probe())
    result: dict[str, Any] = {"fps": (model.num_timesteps - before) / seconds, "seconds": seconds}
    if None not in gains:
        result["two_core_gain"] = gains
    if job.get("profile"):
        accounted = sum(timer.seconds.values())
        result["profile"] = {**timer.seconds, "other (loop, callbacks, logging)": seconds - accounted}
    return result


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else ""


def _print_by_core_help(
    algos: list[str], paired: dict[str, list[float]], gains: dict[str, list[list[float] | None]]
) -> None:
    """The paired ratios split by whether the second core sped up this package's products in that rep
    (both of its :func:`two_core_gain` probes at least ``TWO_CORE_GAIN_THRESHOLD``).

    A virtual machine's host sometimes places its two virtual CPUs far apart; then the products that
    use both cores (SAC, TD3, DQN) slow down while SB3 on one thread does not (see ``two_core_gain``).
    """
    rows = []
    for algo in algos:
        flags = [min(probes) >= TWO_CORE_GAIN_THRESHOLD for probes in gains[algo] if probes is not None]
        if not paired[algo] or len(flags) != len(paired[algo]):  # no peer, or a rep without probes
            continue
        for label, wanted in (("yes", True), ("no", False)):
            chosen = [ratio for ratio, flag in zip(paired[algo], flags) if flag == wanted]
            rows.append([algo.upper(), label, len(chosen), median(chosen), _spread(chosen)])
    if rows:
        print(
            f"\nPaired ratio by whether the second core helped (two-core gain >= {TWO_CORE_GAIN_THRESHOLD} "
            "before and after this package's timed run):"
        )
        print_table(["algo", "second core helped", "reps", "paired ratio", "per rep"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algos", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print where an iteration's time goes")
    parser.add_argument("--plot", default=None, help="write a bar chart of the ratios to this PNG")
    add_peer_arguments(parser)
    args = parser.parse_args()
    if handle_worker(args, worker):
        return

    script = os.path.abspath(__file__)
    print(machine_summary())
    if args.profile:
        libraries = ["mlx"]
        sb3_python = peer_python(args)
        if sb3_python:
            libraries.append("sb3")
        for algo in args.algos:
            for library in libraries:
                python = sys.executable if library == "mlx" else sb3_python
                result = run_worker(python, script, library, {"algo": algo, "seed": 0, "profile": True})  # type: ignore[arg-type]
                total = result["seconds"]
                print(f"\n{algo.upper()} ({library}): {result['fps']:.0f} FPS over {total:.1f} s")
                rows = [
                    [part, seconds, 100 * seconds / total]
                    for part, seconds in sorted(result["profile"].items(), key=lambda item: -item[1])
                ]
                print_table(["part", "seconds", "%"], rows)
        return

    sb3_python = peer_python(args)
    print(f"Throughput | algos {args.algos} | reps {args.reps} | SB3: {sb3_python or 'not available'}")
    fps: dict[str, dict[str, list[float]]] = {algo: {"mlx": [], "sb3": []} for algo in args.algos}
    # Per rep of this package: its two-core probes before and after the timed run, None if not taken
    gains: dict[str, list[list[float] | None]] = {algo: [] for algo in args.algos}
    for rep in range(args.reps):
        for algo in args.algos:
            libraries = ["mlx", "sb3"] if sb3_python else ["mlx"]
            if rep % 2 == 1:
                libraries.reverse()
            for library in libraries:
                python = sys.executable if library == "mlx" else sb3_python
                result = run_worker(python, script, library, {"algo": algo, "seed": rep})  # type: ignore[arg-type]
                fps[algo][library].append(result["fps"])
                probes = result.get("two_core_gain")
                note = ""
                if library == "mlx":
                    gains[algo].append(probes)
                    if probes is not None:
                        note = f" (two-core gain {probes[0]:.2f} before, {probes[1]:.2f} after)"
                print(f"  rep {rep} {algo} {library}: {result['fps']:.0f} FPS{note}")
    # Each rep's two runs are back to back: their ratio cancels slow changes in the machine's speed
    paired = {
        algo: [mine / peer for mine, peer in zip(fps[algo]["mlx"], fps[algo]["sb3"])] for algo in args.algos
    }
    rows = []
    for algo in args.algos:
        setup = SETUPS[algo]
        mlx_fps, sb3_fps = median(fps[algo]["mlx"]), median(fps[algo]["sb3"])
        rows.append(
            [
                algo.upper(),
                setup["env"],
                setup["n_envs"],
                mlx_fps,
                sb3_fps,
                mlx_fps / sb3_fps if fps[algo]["sb3"] else float("nan"),
                median(paired[algo]),
                _spread(paired[algo]),
            ]
        )
    timed = ", ".join(f"{a}: {SETUPS[a]['steps']}" for a in args.algos)
    print(f"\nMedians over {args.reps} reps (timed {timed} steps after warm-up):")
    print_table(["algo", "env", "n_envs", "mlx FPS", "SB3 FPS", "ratio", "paired ratio", "per rep"], rows)
    print("ratio: of the medians; paired ratio: the median of each rep's mlx/SB3 (runs back to back)")
    _print_by_core_help(args.algos, paired, gains)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = [row[0] for row in rows]
        if sb3_python:
            values, label, text = [row[5] for row in rows], "FPS ratio (mlx_baselines3 / SB3)", "{:.2f}x"
            ax.axhline(1.0, color="black", linewidth=0.8)
        else:  # no peer, no ratio: the bars are this package's own FPS
            values, label, text = [row[3] for row in rows], "FPS (mlx_baselines3; SB3 not run)", "{:.0f}"
        ax.bar(names, values, color="tab:blue")
        ax.set_ylabel(label)
        ax.set_title(f"Training throughput, same machine, same run\nmachine: {cpu_summary()}", fontsize=9)
        for index, value in enumerate(values):
            ax.text(index, value, text.format(value), ha="center", va="bottom")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"Wrote {args.plot}")


if __name__ == "__main__":
    main()

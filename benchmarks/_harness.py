"""Shared pieces of the benchmark scripts: running a training job in a worker process (this package
or Stable-Baselines3 from another Python environment), evaluating, and printing tables.

A worker is this same machinery run as ``python <script> --worker {mlx,sb3} --job '<json>'``; it
prints one JSON line with its figures. Running both libraries as subprocesses keeps them
symmetric (each pays its own start-up and, for MLX, compilation) and lets SB3 live in a separate
environment (it is never a dependency of this package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

SB3_PYTHON_ENV = "SB3_PYTHON"


def find_sb3_python(explicit: str | None = None) -> str | None:
    """A Python interpreter that can import stable_baselines3: ``--sb3-python``, ``$SB3_PYTHON``, or this one."""
    candidates = [explicit, os.environ.get(SB3_PYTHON_ENV), sys.executable]
    for candidate in candidates:
        if not candidate:
            continue
        path = shutil.which(candidate) or candidate
        if not os.path.exists(path):
            continue
        probe = subprocess.run(
            [path, "-c", "import stable_baselines3"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return path
    return None


# RL-Zoo hyperparameters of DQN on CartPole-v1 (used by the learning and the throughput benchmarks)
DQN_CARTPOLE_ZOO: dict[str, Any] = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every SB3-comparing script takes: where SB3 lives, and the hidden worker mode."""
    parser.add_argument(
        "--sb3-python", default=None, help="interpreter with stable_baselines3 (or $SB3_PYTHON)"
    )
    parser.add_argument("--no-sb3", action="store_true", help="skip SB3 even when it is available")
    parser.add_argument(
        "--malloc",
        default=None,
        help="allocator preloaded into both libraries' processes (default: $MLX_BASELINES3_MALLOC, else "
        "auto): auto (the mimalloc pip installed with the package, else a system jemalloc/tcmalloc/mimalloc; see mlx_baselines3/_malloc.py), "
        "off (the C library's), or a library path",
    )
    parser.add_argument("--worker", choices=["mlx", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)


def handle_worker(args: argparse.Namespace, worker: Callable[[str, dict[str, Any]], dict[str, Any]]) -> bool:
    """In worker mode, run the job and print its JSON result; return whether that happened."""
    if not args.worker:
        _select_allocator(args.malloc)
        return False
    result = worker(args.worker, json.loads(args.job))
    print(json.dumps({**result, "malloc": _malloc_provider()}))
    return True


def _malloc_provider() -> str | None:
    """The library that provides ``malloc`` to this process (both libraries' workers report it).

    ``mlx_baselines3._malloc.malloc_provider`` does the same, but SB3's worker runs in an
    interpreter without this package (nor MLX), so the harness carries its own few lines."""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                    ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

    try:
        libc = ctypes.CDLL(None)
        address = ctypes.cast(libc.malloc, ctypes.c_void_p).value
        info = DlInfo()
        libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        if not libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)) or not info.fname:
            return None
        return os.path.realpath(info.fname.decode(errors="replace"))
    except (OSError, AttributeError):
        return None


def peer_python(args: argparse.Namespace) -> str | None:
    """The SB3 interpreter to compare with, unless ``--no-sb3``."""
    return None if args.no_sb3 else find_sb3_python(args.sb3_python)


_preload: str | None = None  # allocator library preloaded into every worker, SB3's and this package's
_warned_malloc: set[str] = set()


def _select_allocator(choice: str | None) -> None:
    """Choose the ``malloc`` of the worker processes (the same for both libraries) and say which."""
    global _preload
    from mlx_baselines3._malloc import AUTO_VALUES, MALLOC_ENV_VAR, resolve_allocator_setting

    setting = os.environ.get(MALLOC_ENV_VAR, "auto") if choice is None else choice
    inherited = os.environ.get("LD_PRELOAD", "").strip()
    try:
        found = resolve_allocator_setting(setting, MALLOC_ENV_VAR if choice is None else "--malloc")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if setting.strip().lower() in AUTO_VALUES and inherited:
        found = None  # the caller's own LD_PRELOAD decides
    _preload = str(found) if found else None
    described = _preload or (f"as inherited (LD_PRELOAD={inherited})" if inherited else "the C library's")
    print(f"malloc in both libraries' processes: {described}")


def cpu_summary() -> str:
    """The CPU model and how many cores this process may use."""
    import platform

    from mlx_baselines3._blas import cpuinfo_field

    model = cpuinfo_field("model name") or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def machine_summary() -> str:
    """One line on what ran this package: :func:`cpu_summary`, MLX version and device, and the
    BLAS MLX's products go to (figures differ between the machines a run may land on)."""
    import mlx.core as mx

    from mlx_baselines3._blas import blas_info

    info = blas_info()
    blas = f"{info.get('version') or info.get('library')}, {info.get('num_threads')} threads" if info["active"] else info["reason"]
    return f"machine: {cpu_summary()} | MLX {mx.__version__} on {mx.default_device()} | BLAS: {blas}"


def run_worker(
    python: str, script: str, library: str, job: dict[str, Any], timeout: float = 3600
) -> dict[str, Any]:
    """Run one job in a fresh process and return its JSON result."""
    env = dict(os.environ)
    if _preload is not None:
        from mlx_baselines3._malloc import environment_with_allocator

        env = environment_with_allocator(_preload, env)
    if library == "sb3":
        # torch's default threads spin and collapse on a busy 2-core machine: pin to one thread.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MKL_NUM_THREADS", "1")
    completed = subprocess.run(
        [python, script, "--worker", library, "--job", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{library} worker failed:\n{completed.stderr[-4000:]}")
    for line in reversed(completed.stdout.strip().splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            _check_malloc(library, result.get("malloc"))
            return result
    raise RuntimeError(f"{library} worker printed no result:\n{completed.stdout[-2000:]}")


def _check_malloc(library: str, used: str | None) -> None:
    """Warn (once per library) when a worker did not run with the preloaded allocator."""
    from mlx_baselines3._blas import same_file

    if _preload is not None and library not in _warned_malloc and not same_file(used, _preload):
        _warned_malloc.add(library)
        print(f"  WARNING: {library} worker ran with malloc from {used}, not {_preload}")


def import_library(library: str) -> Any:
    """The algorithms module of the chosen library (torch pinned to 1 thread for SB3)."""
    if library == "sb3":
        import stable_baselines3
        import torch

        torch.set_num_threads(1)
        return stable_baselines3
    import mlx_baselines3

    return mlx_baselines3


def evaluate(
    model: Any, env_id: str, n_episodes: int = 10, seed: int = 1000, wrapper: Callable | None = None
) -> float:
    """Mean return of ``n_episodes`` deterministic episodes on a fresh env (same code for both libraries)."""
    import gymnasium as gym

    env = gym.make(env_id)
    if wrapper is not None:
        env = wrapper(env)
    returns = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(sum(returns) / len(returns))


def timed_learn(model: Any, total_timesteps: int) -> float:
    """Wall-clock seconds of ``model.learn(total_timesteps)``."""
    start = time.perf_counter()
    model.learn(total_timesteps=total_timesteps)
    return time.perf_counter() - start


TWO_CORE_GAIN_THRESHOLD = 1.4
"""A rep whose :func:`two_core_gain` probes are all at least this counts as one where the two cores
cooperated (measured on the 2-core AMD machine: 1.55-1.87 when the host keeps the two virtual CPUs
close, 1.0-1.2 when it places them apart)."""


def two_core_gain(size: int = 256, products: int = 40) -> float | None:
    """How much faster a ``size``-cubed float32 product runs on MLX with the BLAS's own thread count
    than with one thread: median times, the Python thread and MLX's worker placed as in ``learn``.

    On a virtual machine the host may place the two virtual CPUs far apart (a cache-line round trip
    between them ~60-130 ns at some times, ~240-500 ns at others, on the 2-core AMD machine). When they
    are apart, the second BLAS thread hardly helps (gain ~1.0-1.2 instead of ~1.6-1.8), and SAC,
    TD3 and DQN, whose large products use both cores, slow down while SB3 on one thread does not.
    Taken before and after a timed run, it says which kind of period the run fell in.

    :return: the gain, or None when this package's BLAS routing is not active (its thread count
        cannot be changed, e.g. on macOS)
    """
    import mlx.core as mx

    from mlx_baselines3._blas import blas_info, set_blas_num_threads
    from mlx_baselines3.common.thread_placement import mlx_threads_on_one_core

    info = blas_info()
    threads = info.get("num_threads")
    if not info["active"] or not threads or threads < 2:
        return None
    # Own keys: the probe runs between a model's warm-up and its timed run, and must not draw from
    # MLX's global random state (part of the SAC/TD3 training state)
    a = mx.random.normal((size, size), key=mx.random.key(1))
    b = mx.random.normal((size, size), key=mx.random.key(2))
    mx.eval(a, b)

    def median_seconds(num_threads: int) -> float:
        set_blas_num_threads(num_threads)
        for _ in range(5):
            mx.eval(a @ b)
        times = []
        for _ in range(products):
            start = time.perf_counter()
            mx.eval(a @ b)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    try:
        with mlx_threads_on_one_core():
            one = median_seconds(1)
            many = median_seconds(threads)
    finally:
        set_blas_num_threads(threads)
    return one / many


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    print(line)
    for index, row in enumerate(cells):
        print(" | ".join(value.rjust(width) for value, width in zip(row, widths)))
        if index == 0:
            print(line)
    print(line)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)

"""Keep the Python thread and MLX's CPU worker thread on one core while training (Linux).

MLX runs the operations of its CPU stream on a worker thread of its own: every ``mx.eval`` hands
work from the calling thread to that worker and waits for it to finish. When the two threads sit
on different cores and the worker's core is idle, each hand-off has to wake a sleeping core. On
virtual machines that wake-up goes through the hypervisor and costs tens of microseconds: on the
2-core Linux machines this project is measured on, evaluating one small operation took ~75 us
with the threads apart and ~10 us with both on one core. A training loop evaluates thousands of
small graphs, so this hand-off, not arithmetic, was a large share of an MlpPolicy's time.

:func:`mlx_threads_on_one_core` pins the calling thread and MLX's CPU worker to the least busy
core (sampled from ``/proc/stat`` over 20 ms, so that two trainings started together take
different cores), and restores both threads' previous affinity on exit. Only those two
threads move: the OpenBLAS threads (multi-threaded matrix products), env worker processes and
any other thread keep every core. ``learn()`` of every algorithm and ``evaluate_policy`` use it.

The worker thread is found by watching each thread's count of voluntary context switches
(``/proc/self/task/<tid>/status``) while evaluating a few tiny MLX operations: the worker is the
one other thread that goes to sleep and is woken once per evaluation (threads that spin, such as
OpenBLAS's while it waits for work, do not count voluntary switches). If it cannot be identified unambiguously,
nothing is pinned.

By default (``auto``) threads are pinned only when the 1-minute load average leaves a core idle: a
pinned thread cannot leave a core that other jobs make busy. The environment variable
``MLX_BASELINES3_PIN_THREADS`` set to ``0`` turns it off, ``1`` pins whatever the load. Nothing
happens on macOS or other systems without ``os.sched_setaffinity``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx

__all__ = ["PIN_THREADS_ENV_VAR", "find_mlx_cpu_worker", "mlx_threads_on_one_core"]

PIN_THREADS_ENV_VAR = "MLX_BASELINES3_PIN_THREADS"
"""Environment variable: ``0``/``off`` leaves thread placement to the operating system, ``1``
pins even on a busy machine; unset, threads are pinned when the load average leaves a core idle."""

_OFF_VALUES = frozenset({"0", "off", "false", "no", "none"})
# Evaluations used to find the worker; it must be woken for at least half of them.
_PROBE_EVALS = 16
_TASK_DIR = "/proc/self/task"

_state = threading.local()
_worker_cache: dict[int, int] = {}  # pid -> tid of MLX's CPU worker


_ON_VALUES = frozenset({"1", "on", "true", "yes", "always"})


def _enabled() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(os, "sched_setaffinity"):
        return False
    setting = os.environ.get(PIN_THREADS_ENV_VAR, "").strip().lower()
    if setting in _OFF_VALUES or mx.default_device() != mx.cpu:
        return False
    if setting in _ON_VALUES:
        return True
    return _machine_has_an_idle_core()


def _machine_has_an_idle_core() -> bool:
    """Whether the 1-minute load average leaves at least one usable core idle.

    A pinned thread cannot move away from a busy core. When other jobs already keep the cores busy
    (several trainings started side by side, say), letting the scheduler place threads is safer:
    with three pinned or spinning processes on two cores, a PPO run measured 30x slower.
    """
    try:
        return os.getloadavg()[0] < len(os.sched_getaffinity(0)) - 0.5
    except OSError:
        return False


def _sleeps_per_thread() -> dict[int, int]:
    """Thread id -> number of times it went to sleep (``voluntary_ctxt_switches``)."""
    counts: dict[int, int] = {}
    for name in os.listdir(_TASK_DIR):
        try:
            with open(f"{_TASK_DIR}/{name}/status") as handle:
                for line in handle:
                    if line.startswith("voluntary_ctxt_switches:"):
                        counts[int(name)] = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return counts


def find_mlx_cpu_worker() -> int | None:
    """Thread id of MLX's CPU-stream worker thread in this process, or None if not identified.

    Evaluates a few one-element MLX operations on the CPU and returns the only other thread that
    slept (and was woken) at least once per two evaluations. The answer is cached per process.
    """
    pid = os.getpid()
    cached = _worker_cache.get(pid)
    if cached is not None and os.path.exists(f"{_TASK_DIR}/{cached}"):
        return cached
    caller = threading.get_native_id()
    before = _sleeps_per_thread()
    value = mx.zeros((1,), stream=mx.cpu)
    for _ in range(_PROBE_EVALS):
        value = mx.add(value, 1, stream=mx.cpu)
        mx.eval(value)
    after = _sleeps_per_thread()
    woken = [tid for tid, count in after.items() if tid != caller and count - before.get(tid, 0) >= _PROBE_EVALS // 2]
    if len(woken) != 1:
        return None
    _worker_cache[pid] = woken[0]
    return woken[0]


def _busy_ticks_per_cpu() -> dict[int, int]:
    """Core -> ticks spent busy since boot (``/proc/stat``: all fields but idle and iowait)."""
    ticks: dict[int, int] = {}
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    numbers = [int(value) for value in values]
                    ticks[int(name[3:])] = sum(numbers) - numbers[3] - (numbers[4] if len(numbers) > 4 else 0)
    except (OSError, ValueError, IndexError):
        return {}
    return ticks


def _least_busy_cpu(allowed: set[int], interval: float = 0.02) -> int | None:
    """The allowed core that was least busy over ``interval`` seconds (the current one on ties)."""
    before = _busy_ticks_per_cpu()
    time.sleep(interval)
    after = _busy_ticks_per_cpu()
    current = _current_cpu()
    load = {cpu: after[cpu] - before.get(cpu, 0) for cpu in allowed if cpu in after}
    if not load:
        return current
    return min(load, key=lambda cpu: (load[cpu], cpu != current))


def _current_cpu() -> int | None:
    """The core the calling thread last ran on (field 39 of ``/proc/thread-self/stat``)."""
    try:
        with open("/proc/thread-self/stat") as handle:
            fields_after_name = handle.read().rsplit(")", 1)[1].split()
        return int(fields_after_name[36])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def mlx_threads_on_one_core() -> Iterator[None]:
    """Within the block, run the calling thread and MLX's CPU worker on the same core.

    Nested uses keep the outermost placement. Restores both threads' affinity on exit, also when
    the block raises. Does nothing when disabled (``MLX_BASELINES3_PIN_THREADS=0``), off Linux,
    when MLX's default device is not the CPU, or when the worker cannot be identified.
    """
    depth = getattr(_state, "depth", 0)
    restore = _pin_caller_and_worker() if depth == 0 and _enabled() else []
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth
        for tid, cpus in reversed(restore):
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def _pin_caller_and_worker() -> list[tuple[int, set[int]]]:
    """Pin the calling thread and MLX's worker to the least busy core; ``(tid, previous cpus)`` to restore."""
    restore: list[tuple[int, set[int]]] = []
    try:
        caller_cpus = os.sched_getaffinity(0)
        worker = find_mlx_cpu_worker() if len(caller_cpus) > 1 else None
        cpu = _least_busy_cpu(caller_cpus) if worker is not None else None
        if worker is not None and cpu in caller_cpus:
            worker_cpus = os.sched_getaffinity(worker)
            os.sched_setaffinity(worker, {cpu})
            restore.append((worker, worker_cpus))
            os.sched_setaffinity(0, {cpu})
            restore.append((0, caller_cpus))
    except OSError:
        pass  # placement is an optimisation only: leave the threads where they are
    return restore

"""Keep the Python thread and MLX's CPU worker thread on one core while training (Linux).

MLX runs the operations of its CPU stream on a worker thread of its own: every ``mx.eval`` hands
work from the calling thread to that worker and waits for it to finish. When the two threads sit
on different cores and the worker's core is idle, each hand-off has to wake a sleeping core. On
virtual machines that wake-up goes through the hypervisor and costs tens of microseconds: on the
2-core Linux machines this project is measured on, evaluating one small operation took ~75 us
with the threads apart and ~10 us with both on one core. A training loop evaluates thousands of
small graphs, so this hand-off, not arithmetic, was a large share of an MlpPolicy's time.

:func:`mlx_threads_on_one_core` pins the calling thread and MLX's CPU worker to the least busy
core (sampled from ``/proc/stat`` over 50 ms, so that two trainings started together take
different cores), and restores both threads' previous affinity on exit. Only those two
threads move: the OpenBLAS threads (multi-threaded matrix products), env worker processes and
any other thread keep every core. ``learn()`` of every algorithm and ``evaluate_policy`` use it.

While they share the core, the worker runs under ``SCHED_BATCH``. A normal thread that is woken
preempts the thread on its core: every operation the Python thread handed over woke the worker,
which took the core for that one operation and went back to sleep, two context switches per
operation. A batch thread does not preempt on wake-up, so the Python thread queues a compiled
step's operations and the worker then runs them back to back (PPO CartPole 6.9k -> 8.7k steps/s,
DQN +5%; on its own core, or unpinned, it made no difference). The calling thread runs under
``SCHED_BATCH`` too: MLX wakes it whenever the worker finishes a group of ten operations, and as a
normal thread it took the core back each time (two context switches per group, ~100 per SAC
gradient step); as a batch thread it waits until the worker sleeps. That made a SAC step ~2%
faster (5.25-5.38 -> 5.06-5.21 ms, six alternating pairs) and PPO no different. Both threads'
previous policies are restored with their affinity.

The worker thread is found by watching each thread's count of voluntary context switches
(``/proc/self/task/<tid>/status``) while evaluating a few tiny MLX operations: the worker is the
one other thread that goes to sleep and is woken once per evaluation (threads that spin, such as
OpenBLAS's while it waits for work, do not count voluntary switches). If it cannot be identified unambiguously,
nothing is pinned.

By default (``auto``) threads are pinned only when other processes leave a core idle, measured
over 50 ms from ``/proc/stat`` minus this process's own CPU time: a pinned thread cannot leave a
core that other jobs make busy. (The 1-minute load average, used before, still counts a training
that has just finished, and this process's own spinning BLAS threads: back-to-back trainings then
ran unpinned.) The environment variable
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

__all__ = [
    "PIN_THREADS_ENV_VAR",
    "busy_cores_of_other_processes",
    "find_mlx_cpu_worker",
    "mlx_threads_on_one_core",
]

PIN_THREADS_ENV_VAR = "MLX_BASELINES3_PIN_THREADS"
"""Environment variable: ``0``/``off`` leaves thread placement to the operating system, ``1``
pins even on a busy machine; unset, threads are pinned when other processes leave a core idle."""

_OFF_VALUES = frozenset({"0", "off", "false", "no", "none"})
# Evaluations used to find the worker; it must be woken for at least half of them.
_PROBE_EVALS = 16
_TASK_DIR = "/proc/self/task"

_state = threading.local()
_Scheduling = tuple[int, "os.sched_param"]
_Restore = tuple[int, set[int], "_Scheduling | None"]  # (tid, previous cpus, previous scheduling)
# The worker is shared by every Python thread of the process: placed by the first thread that
# enters mlx_threads_on_one_core, restored when the last one leaves.
_worker_lock = threading.Lock()
_worker_users = 0
_worker_restore: list[_Restore] = []
_worker_cache: dict[int, int] = {}  # pid -> tid of MLX's CPU worker


_ON_VALUES = frozenset({"1", "on", "true", "yes", "always"})


def _mode() -> str | None:
    """``None`` (do not pin), ``"force"`` (pin whatever the load) or ``"auto"`` (pin when a core is idle)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "sched_setaffinity"):
        return None
    setting = os.environ.get(PIN_THREADS_ENV_VAR, "").strip().lower()
    if setting in _OFF_VALUES or mx.default_device() != mx.cpu:
        return None
    return "force" if setting in _ON_VALUES else "auto"


def _own_cpu_ticks() -> int:
    """CPU time of this process (all threads), in clock ticks (``utime + stime`` of ``/proc/self/stat``)."""
    with open("/proc/self/stat") as handle:
        fields_after_name = handle.read().rsplit(")", 1)[1].split()
    return int(fields_after_name[11]) + int(fields_after_name[12])


def _cpu_load(allowed: set[int], interval: float = 0.05) -> tuple[dict[int, int], float] | None:
    """One sample of ``/proc/stat`` over ``interval`` seconds: busy ticks of each allowed core, and
    how many of the allowed cores other processes kept busy (this process's own CPU time, a BLAS
    thread still spinning after a matrix product say, subtracted). None when it cannot be read."""
    try:
        before, own_before = _ticks_per_cpu(), _own_cpu_ticks()
        time.sleep(interval)
        after, own_after = _ticks_per_cpu(), _own_cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    cores = [cpu for cpu in allowed if cpu in before and cpu in after]
    elapsed = sum(after[cpu][1] - before[cpu][1] for cpu in cores) / max(len(cores), 1)
    if not cores or elapsed <= 0:
        return None
    busy = {cpu: after[cpu][0] - before[cpu][0] for cpu in cores}
    others = sum(busy.values()) - (own_after - own_before)
    return busy, max(others, 0) / elapsed


def busy_cores_of_other_processes(allowed: set[int], interval: float = 0.05) -> float | None:
    """How many of the ``allowed`` cores other processes kept busy over the next ``interval`` seconds
    (None when ``/proc/stat`` cannot be read)."""
    load = _cpu_load(allowed, interval)
    return None if load is None else load[1]


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
        time.sleep(0.0005)  # the worker runs out of work and goes to sleep before the next one
    after = _sleeps_per_thread()
    woken = sorted(
        ((count - before.get(tid, 0), tid) for tid, count in after.items() if tid != caller), reverse=True
    )
    # The worker sleeps once per evaluation; another thread may sleep too (timers, a BLAS thread
    # parking), but not as regularly: take the most regular one if it stands out.
    if not woken or woken[0][0] < _PROBE_EVALS // 2 or (len(woken) > 1 and woken[1][0] * 2 > woken[0][0]):
        return None
    _worker_cache[pid] = woken[0][1]
    return woken[0][1]


def _ticks_per_cpu() -> dict[int, tuple[int, int]]:
    """Core -> (ticks busy, ticks in all) since boot (``/proc/stat``; idle and iowait are not busy)."""
    ticks: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as handle:
        for line in handle:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                numbers = [int(value) for value in values[:8]]  # guest time is already in user
                idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
                ticks[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return ticks


def _least_busy_cpu(busy: dict[int, int]) -> int | None:
    """The core with the fewest busy ticks (the current one on ties, or when there is no sample)."""
    current = _current_cpu()
    if not busy:
        return current
    return min(busy, key=lambda cpu: (busy[cpu], cpu != current))


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

    Nested uses keep the outermost placement. Both threads run under ``SCHED_BATCH`` meanwhile
    (a policy the user chose other than the normal one is kept). Restores both threads' affinity
    and scheduling policy on exit, also when the block raises. Does nothing when disabled (``MLX_BASELINES3_PIN_THREADS=0``), off Linux,
    when MLX's default device is not the CPU, or when the worker cannot be identified.

    MLX has one worker per process: when several Python threads are inside the block at once, the
    first one places the worker (and itself), the others run unpinned, and the worker is restored
    when the last one leaves; each thread restores its own affinity when it leaves.
    """
    global _worker_users, _worker_restore
    depth = getattr(_state, "depth", 0)
    own_restore: list[_Restore] = []
    if depth == 0:
        with _worker_lock:
            if _worker_users == 0:
                mode = _mode()
                if mode is not None:
                    own_restore, _worker_restore = _pin_caller_and_worker(only_if_idle=mode == "auto")
            _worker_users += 1
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth
        if depth == 0:
            _restore(own_restore)
            with _worker_lock:
                _worker_users -= 1
                if _worker_users == 0:
                    _restore(_worker_restore)
                    _worker_restore = []


def _restore(entries: list[_Restore]) -> None:
    for tid, cpus, scheduling in reversed(entries):
        if scheduling is not None:
            try:
                os.sched_setscheduler(tid, *scheduling)
            except OSError:
                pass
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


def _batch_scheduling(tid: int) -> _Scheduling | None:
    """Move thread ``tid`` from the normal policy to ``SCHED_BATCH`` (no preemption on wake-up).

    :return: its previous ``(policy, parameters)``, or None when it was left alone: any policy
        other than ``SCHED_OTHER`` (idle, real-time: chosen by the user) or a refused change
    """
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None:
        return None
    try:
        policy = os.sched_getscheduler(tid)
        if policy & ~getattr(os, "SCHED_RESET_ON_FORK", 0) != os.SCHED_OTHER:
            return None
        previous = (policy, os.sched_getparam(tid))
        os.sched_setscheduler(tid, batch, os.sched_param(0))
    except OSError:
        return None
    return previous


def _pin_caller_and_worker(only_if_idle: bool) -> tuple[list[_Restore], list[_Restore]]:
    """Pin the calling thread and MLX's worker to the least busy core and make both batch threads;
    what to restore for the caller and for the worker (both empty when nothing moved).

    With ``only_if_idle``, nothing is pinned unless other processes leave a core idle: a pinned
    thread cannot move away from a busy core, and when other jobs already keep the cores busy
    (several trainings started side by side, say) the scheduler places threads better; with three
    pinned or spinning processes on two cores, a PPO run measured 30x slower. One ``/proc/stat``
    sample serves both this check and the choice of core.
    """
    worker_restore: list[_Restore] = []
    try:
        caller_cpus = os.sched_getaffinity(0)
        worker = find_mlx_cpu_worker() if len(caller_cpus) > 1 else None
        if worker is None:
            return [], []
        load = _cpu_load(caller_cpus)
        if only_if_idle and (load is None or load[1] >= len(caller_cpus) - 0.5):
            return [], []
        cpu = _least_busy_cpu(load[0] if load is not None else {})
        if cpu not in caller_cpus:
            return [], []
        worker_cpus = os.sched_getaffinity(worker)
        os.sched_setaffinity(worker, {cpu})
        worker_restore.append((worker, worker_cpus, _batch_scheduling(worker)))
        os.sched_setaffinity(0, {cpu})
        return [(0, caller_cpus, _batch_scheduling(0))], worker_restore
    except OSError:  # placement is an optimisation only: leave the threads where they are
        return [], worker_restore

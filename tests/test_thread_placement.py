"""Thread placement while training: the Python thread and MLX's CPU worker share one core."""

from __future__ import annotations

import os
import sys
import threading

import gymnasium as gym
import mlx.core as mx
import pytest

from mlx_baselines3 import PPO
from mlx_baselines3.common import thread_placement
from mlx_baselines3.common.callbacks import BaseCallback
from mlx_baselines3.common.thread_placement import (
    PIN_THREADS_ENV_VAR,
    find_mlx_cpu_worker,
    mlx_threads_on_one_core,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="thread placement applies on Linux with at least two usable cores",
)


@pytest.fixture(autouse=True)
def _always_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default pins only when the load average leaves a core idle; tests must not depend on load
    monkeypatch.setenv(PIN_THREADS_ENV_VAR, "1")


def _affinities() -> dict[int, set[int]]:
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")}


def _policies() -> dict[int, int]:
    return {int(tid): os.sched_getscheduler(int(tid)) for tid in os.listdir("/proc/self/task")}


def test_worker_is_the_thread_that_runs_mlx_operations() -> None:
    worker = find_mlx_cpu_worker()
    assert worker is not None
    assert worker != threading.get_native_id()
    assert os.path.exists(f"/proc/self/task/{worker}")
    # Evaluating MLX work wakes that thread: its voluntary context switches grow.
    before = thread_placement._sleeps_per_thread()[worker]
    value = mx.zeros((1,))
    for _ in range(20):
        value = value + 1
        mx.eval(value)
    assert thread_placement._sleeps_per_thread()[worker] - before >= 10


def test_pins_caller_and_worker_together_and_restores() -> None:
    before = _affinities()
    policies_before = _policies()
    worker = find_mlx_cpu_worker()
    assert worker is not None
    assert policies_before[worker] == os.SCHED_OTHER
    with mlx_threads_on_one_core():
        inside = _affinities()
        caller = inside[threading.get_native_id()]
        assert len(caller) == 1
        assert inside[worker] == caller
        others = {tid: cpus for tid, cpus in inside.items() if tid not in (worker, threading.get_native_id())}
        assert all(cpus == before[tid] for tid, cpus in others.items()), "only the two threads move"
        # Neither preempts the other when handed work; nothing else changes policy
        policies = _policies()
        me = threading.get_native_id()
        assert policies[worker] == os.SCHED_BATCH and policies[me] == os.SCHED_BATCH
        assert all(policies[tid] == policies_before[tid] for tid in policies if tid not in (worker, me))
        with mlx_threads_on_one_core():  # nested: unchanged
            assert _affinities()[worker] == caller
            assert os.sched_getscheduler(worker) == os.SCHED_BATCH
        assert _affinities()[worker] == caller
    assert _affinities() == before
    assert _policies() == policies_before


def test_restores_when_the_block_raises() -> None:
    before = _affinities()
    policies_before = _policies()
    with pytest.raises(RuntimeError, match="boom"), mlx_threads_on_one_core():
        raise RuntimeError("boom")
    assert _affinities() == before
    assert _policies() == policies_before


def test_environment_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PIN_THREADS_ENV_VAR, "0")
    before = _affinities()
    policies_before = _policies()
    with mlx_threads_on_one_core():
        assert _affinities() == before
        assert _policies() == policies_before


def test_learn_runs_pinned_and_restores() -> None:
    seen: list[int] = []
    worker_policies: list[int] = []
    caller_policies: list[int] = []
    worker = find_mlx_cpu_worker()
    assert worker is not None

    class RecordAffinity(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(len(os.sched_getaffinity(0)))
            worker_policies.append(os.sched_getscheduler(worker))
            caller_policies.append(os.sched_getscheduler(0))
            return True

    before = os.sched_getaffinity(0)
    PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=16, batch_size=16, n_epochs=1).learn(32, callback=RecordAffinity())
    assert seen and set(seen) == {1}
    assert set(worker_policies) == {os.SCHED_BATCH} and set(caller_policies) == {os.SCHED_BATCH}
    assert os.sched_getaffinity(0) == before
    assert os.sched_getscheduler(worker) == os.SCHED_OTHER and os.sched_getscheduler(0) == os.SCHED_OTHER


def test_auto_mode_pins_only_when_other_processes_leave_a_core_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlx_baselines3.common.thread_placement as placement

    monkeypatch.delenv(PIN_THREADS_ENV_VAR)
    cores = len(os.sched_getaffinity(0))
    before = _affinities()
    monkeypatch.setattr(placement, "_cpu_load", lambda allowed: ({}, float(cores)))  # all busy
    with mlx_threads_on_one_core():
        assert _affinities() == before
    monkeypatch.setattr(placement, "_cpu_load", lambda allowed: ({}, 0.0))  # idle machine
    with mlx_threads_on_one_core():
        assert len(os.sched_getaffinity(0)) == 1
    assert _affinities() == before


def test_busy_cores_counts_other_processes_and_not_this_one() -> None:
    """A process spinning on one core counts as ~1 busy core; a thread of this process spinning does
    not count (a just-finished training or a spinning BLAS thread must not stop the next one pinning)."""
    import subprocess
    import sys
    import threading
    import time

    from mlx_baselines3.common.thread_placement import busy_cores_of_other_processes

    allowed = os.sched_getaffinity(0)
    baseline = busy_cores_of_other_processes(allowed, interval=0.3)
    assert baseline is not None
    if baseline > len(allowed) - 1.3:
        pytest.skip(f"other jobs keep {baseline:.1f} of {len(allowed)} cores busy: nothing to compare against")
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.05)
        own = busy_cores_of_other_processes(allowed, interval=0.3)
    finally:
        stop.set()
        spinner.join()
    other = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        others = busy_cores_of_other_processes(allowed, interval=0.3)
    finally:
        other.kill()
        other.wait()
    assert own is not None and others is not None
    assert own < baseline + 0.4, (baseline, own)
    assert others > baseline + 0.6, (baseline, others)


def test_a_policy_the_user_chose_is_left_alone() -> None:
    worker = find_mlx_cpu_worker()
    assert worker is not None
    os.sched_setscheduler(worker, os.SCHED_IDLE, os.sched_param(0))
    try:
        with mlx_threads_on_one_core():
            assert os.sched_getscheduler(worker) == os.SCHED_IDLE
            assert len(os.sched_getaffinity(worker)) == 1  # still pinned
        assert os.sched_getscheduler(worker) == os.SCHED_IDLE
    finally:
        try:
            os.sched_setscheduler(worker, os.SCHED_OTHER, os.sched_param(0))
        except PermissionError:  # pragma: no cover - unprivileged and RLIMIT_NICE forbids it
            pytest.skip("cannot restore the worker's normal policy without privileges")
    assert os.sched_getscheduler(worker) == os.SCHED_OTHER


def test_threads_overlapping_in_the_block_restore_the_worker_when_the_last_leaves() -> None:
    worker = find_mlx_cpu_worker()
    assert worker is not None
    worker_cpus, worker_policy = os.sched_getaffinity(worker), os.sched_getscheduler(worker)
    first_inside, second_inside, first_left = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        own = os.sched_getaffinity(0)
        with mlx_threads_on_one_core():
            seen["first pinned with the worker"] = os.sched_getaffinity(0) == os.sched_getaffinity(worker)
            first_inside.set()
            second_inside.wait(10)
        seen["first restored on leaving"] = os.sched_getaffinity(0) == own
        first_left.set()

    def second() -> None:
        first_inside.wait(10)
        with mlx_threads_on_one_core():
            second_inside.set()
            first_left.wait(10)
            # The first thread has left and this one is still inside: the worker stays placed
            seen["worker still pinned"] = len(os.sched_getaffinity(worker)) == 1
            seen["worker still batch"] = os.sched_getscheduler(worker) == os.SCHED_BATCH

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen == dict.fromkeys(
        ["first pinned with the worker", "first restored on leaving", "worker still pinned", "worker still batch"],
        True,
    )
    assert os.sched_getaffinity(worker) == worker_cpus
    assert os.sched_getscheduler(worker) == worker_policy

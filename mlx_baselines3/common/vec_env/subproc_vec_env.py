"""SubprocVecEnv: each environment runs in its own worker process.

Workers talk to the parent through pipes. Every reply is tagged ``("ok", payload)`` or
``("error", traceback)``, and the parent waits on both the pipe and the process sentinel, so
an env that raises, or a worker that dies (killed, segfault), makes the parent raise a
:class:`SubprocVecEnvError` naming the env index at once, instead of hanging.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

# Seconds a worker gets to exit after "close" before it is terminated
_CLOSE_TIMEOUT = 2.0


class SubprocVecEnvError(RuntimeError):
    """A worker of a :class:`SubprocVecEnv` raised an exception or died.

    :param env_index: index of the failing environment
    :param message: what happened
    """

    def __init__(self, env_index: int, message: str, exc_type: str | None = None):
        self.env_index = env_index
        # Name of the exception class raised in the worker (None if the worker died)
        self.exc_type = exc_type
        super().__init__(f"SubprocVecEnv worker for env {env_index}: {message}")


def _worker(remote: Connection, parent_remote: Connection, env_fn_wrapper: CloudpickleWrapper) -> None:
    """Serve commands from the parent for one environment until "close"."""
    from mlx_baselines3.common.env_util import is_wrapped

    parent_remote.close()
    try:
        env: gym.Env = env_fn_wrapper.var()
    except Exception:
        remote.send(("error", ("building the environment failed:\n" + traceback.format_exc(), None)))
        remote.close()
        return

    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, KeyboardInterrupt, OSError):
            break
        if cmd == "close":
            try:
                env.close()
            finally:
                remote.send(("ok", None))
                remote.close()
            break
        try:
            result: Any
            if cmd == "step":
                observation, reward, terminated, truncated, info = env.step(data)
                done = terminated or truncated
                # A time-limit end is not a true terminal state (bootstrapping needs this)
                info["TimeLimit.truncated"] = bool(truncated and not terminated)
                reset_info: dict[str, Any] = {}
                if done:
                    info["terminal_observation"] = observation
                    observation, reset_info = env.reset()
                result = (observation, reward, done, info, reset_info)
            elif cmd == "reset":
                seed, options = data
                maybe_options = {"options": options} if options else {}
                result = env.reset(seed=seed, **maybe_options)
            elif cmd == "render":
                result = env.render()
            elif cmd == "get_spaces":
                result = (env.observation_space, env.action_space)
            elif cmd == "env_method":
                method_name, args, kwargs = data
                result = env.get_wrapper_attr(method_name)(*args, **kwargs)
            elif cmd == "get_attr":
                result = env.get_wrapper_attr(data)
            elif cmd == "set_attr":
                attr_name, value = data
                result = env.set_wrapper_attr(attr_name, value)
            elif cmd == "is_wrapped":
                result = is_wrapped(env, data)
            else:
                raise NotImplementedError(f"`{cmd}` is not a SubprocVecEnv worker command")
        except KeyboardInterrupt:
            break
        except Exception as exc:
            remote.send(
                ("error", (f"command '{cmd}' raised:\n" + traceback.format_exc(), type(exc).__name__))
            )
            continue
        remote.send(("ok", result))


def _stack_obs(obs_list: Sequence[Any], space: spaces.Space) -> VecEnvObs:
    """Stack per-env observations into the batched observation of ``space``."""
    if isinstance(space, spaces.Dict):
        return {key: np.stack([obs[key] for obs in obs_list]) for key in space.spaces.keys()}
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([obs[i] for obs in obs_list]) for i in range(len(space.spaces)))
    return np.stack(obs_list)


class SubprocVecEnv(VecEnv):
    """A VecEnv that runs each environment in its own process.

    Worth it when stepping an env is expensive compared to sending its observation
    between processes. The env functions are sent to the workers with cloudpickle.

    Start methods: ``"forkserver"`` (default where available, as in SB3; safe with threads),
    ``"spawn"`` (slowest to start) or ``"fork"`` (fastest; do not use it once MLX or another
    threaded library has started work in the parent).

    :param env_fns: functions that each build one environment
    :param start_method: multiprocessing start method (default: forkserver if available, else spawn)
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], start_method: str | None = None):
        if len(env_fns) == 0:
            raise ValueError("SubprocVecEnv needs at least one env function")
        self.waiting = False
        self.closed = False
        n_envs = len(env_fns)

        if start_method is None:
            forkserver_available = "forkserver" in mp.get_all_start_methods()
            start_method = "forkserver" if forkserver_available else "spawn"
        ctx = mp.get_context(start_method)

        pipes = [ctx.Pipe() for _ in range(n_envs)]
        self.remotes: list[Connection] = [parent_end for parent_end, _ in pipes]
        self.work_remotes: list[Connection] = [child_end for _, child_end in pipes]
        self.processes: list[BaseProcess] = []
        for work_remote, remote, env_fn in zip(self.work_remotes, self.remotes, env_fns):
            args = (work_remote, remote, CloudpickleWrapper(env_fn))
            # daemon=True: workers die with the parent if it crashes
            process = ctx.Process(target=_worker, args=args, daemon=True)  # type: ignore[attr-defined]
            process.start()
            self.processes.append(process)
        for work_remote in self.work_remotes:
            work_remote.close()

        try:
            self._send(0, "get_spaces", None)
            observation_space, action_space = self._recv(0)
        except Exception:
            self._shutdown()
            raise
        super().__init__(n_envs, observation_space, action_space)

    # --- communication -------------------------------------------------------------------

    def _send(self, index: int, cmd: str, data: Any) -> None:
        try:
            self.remotes[index].send((cmd, data))
        except (BrokenPipeError, EOFError, OSError) as exc:
            raise SubprocVecEnvError(
                index, f"the worker is not running ({self._exit_reason(index)})"
            ) from exc

    def _exit_reason(self, index: int) -> str:
        exitcode = self.processes[index].exitcode
        if exitcode is None:
            return "still running"
        if exitcode < 0:
            return f"killed by signal {-exitcode}"
        return f"exited with code {exitcode}"

    def _recv_tagged(self, index: int) -> tuple[str, Any]:
        """Wait for one reply of worker ``index``, or for its death."""
        remote, process = self.remotes[index], self.processes[index]
        while True:
            ready = wait([remote, process.sentinel])
            if remote in ready:
                try:
                    return remote.recv()
                except (EOFError, OSError):
                    pass  # the worker closed its end: it is dead or dying
            if not process.is_alive() or process.sentinel in ready:
                # The worker may have sent a reply right before it exited
                try:
                    if remote.poll():
                        return remote.recv()
                except (EOFError, OSError):
                    pass
                process.join(timeout=1.0)
                return "died", (f"the worker process died ({self._exit_reason(index)})", None)

    def _recv(self, index: int) -> Any:
        tag, payload = self._recv_tagged(index)
        if tag != "ok":
            raise SubprocVecEnvError(index, *payload)
        return payload

    def _recv_all(self, indices: Sequence[int]) -> list[Any]:
        """Collect one reply from each worker; raise the first failure after reading all."""
        results, first_error = [], None
        for index in indices:
            tag, payload = self._recv_tagged(index)
            if tag != "ok" and first_error is None:
                first_error = SubprocVecEnvError(index, *payload)
            results.append(payload)
        if first_error is not None:
            raise first_error
        return results

    # --- VecEnv API ----------------------------------------------------------------------

    def step_async(self, actions: np.ndarray) -> None:
        self._check_open()
        for index, action in enumerate(actions):
            self._send(index, "step", action)
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        try:
            results = self._recv_all(range(self.num_envs))
        finally:
            self.waiting = False
        obs, rews, dones, infos, reset_infos = zip(*results)
        self.reset_infos = list(reset_infos)
        return (
            _stack_obs(obs, self.observation_space),
            np.array(rews, dtype=np.float32),
            np.array(dones, dtype=bool),
            list(infos),
        )

    def reset(self) -> VecEnvObs:
        self._check_open()
        for index in range(self.num_envs):
            self._send(index, "reset", (self._seeds[index], self._options[index]))
        results = self._recv_all(range(self.num_envs))
        obs, reset_infos = zip(*results)
        self.reset_infos = list(reset_infos)
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(obs, self.observation_space)

    def close(self) -> None:
        """Stop the workers; always reaps them, even if some died or hang."""
        if self.closed:
            return
        self.closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        if self.waiting:
            for index in range(len(self.remotes)):
                if self.processes[index].is_alive():
                    try:
                        self._recv_tagged(index)
                    except Exception:
                        pass
            self.waiting = False
        for index, remote in enumerate(self.remotes):
            if self.processes[index].is_alive():
                try:
                    remote.send(("close", None))
                except (BrokenPipeError, EOFError, OSError):
                    pass
        for process in self.processes:
            process.join(timeout=_CLOSE_TIMEOUT)
            if process.is_alive():
                process.terminate()
                process.join(timeout=_CLOSE_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
        for remote in self.remotes:
            remote.close()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("This SubprocVecEnv is closed")

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            import warnings

            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` "
                "to obtain images.",
                stacklevel=2,
            )
            return [None for _ in self.remotes]
        for index in range(self.num_envs):
            self._send(index, "render", None)
        return self._recv_all(range(self.num_envs))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        target = list(self._get_indices(indices))
        for index in target:
            self._send(index, "get_attr", attr_name)
        try:
            return self._recv_all(target)
        except SubprocVecEnvError as error:
            if error.exc_type == "AttributeError":
                raise AttributeError(f"env {error.env_index} has no attribute '{attr_name}'") from error
            raise

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        target = list(self._get_indices(indices))
        for index in target:
            self._send(index, "set_attr", (attr_name, value))
        self._recv_all(target)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        target = list(self._get_indices(indices))
        for index in target:
            self._send(index, "env_method", (method_name, method_args, method_kwargs))
        return self._recv_all(target)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        target = list(self._get_indices(indices))
        for index in target:
            self._send(index, "is_wrapped", wrapper_class)
        return self._recv_all(target)

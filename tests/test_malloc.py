"""Finding and preloading a faster malloc (mlx_baselines3/_malloc.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_baselines3 import _malloc
from mlx_baselines3._malloc import (
    MALLOC_ENV_VAR,
    environment_with_allocator,
    find_fast_allocator,
    malloc_info,
    restart_with_fast_allocator,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is a Linux mechanism")
INSTALLED = find_fast_allocator({}) if sys.platform.startswith("linux") else None
needs_installed = pytest.mark.skipif(INSTALLED is None, reason="no jemalloc/tcmalloc/mimalloc installed")


def _fake_libraries(folder: Path, *names: str) -> list[str]:
    for name in names:
        (folder / name).write_bytes(b"")
    return [str(folder)]


@linux_only
def test_search_prefers_jemalloc_then_tcmalloc(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _fake_libraries(first, "libtcmalloc_minimal.so.4")
    _fake_libraries(second, "libjemalloc.so.2", "libmimalloc.so.2")
    dirs = [str(first), str(second)]
    assert find_fast_allocator({}, dirs) == second / "libjemalloc.so.2"
    (second / "libjemalloc.so.2").unlink()
    assert find_fast_allocator({}, dirs) == first / "libtcmalloc_minimal.so.4"
    assert find_fast_allocator({}, [str(tmp_path / "empty")]) is None


@linux_only
def test_env_var_turns_off_or_names_the_library(tmp_path: Path) -> None:
    dirs = _fake_libraries(tmp_path, "libjemalloc.so.2")
    assert find_fast_allocator({MALLOC_ENV_VAR: "0"}, dirs) is None
    assert find_fast_allocator({MALLOC_ENV_VAR: "off"}, dirs) is None
    assert find_fast_allocator({MALLOC_ENV_VAR: "auto"}, dirs) == tmp_path / "libjemalloc.so.2"
    custom = tmp_path / "my_malloc.so"
    custom.write_bytes(b"")
    assert find_fast_allocator({MALLOC_ENV_VAR: str(custom)}, []) == custom
    with pytest.raises(FileNotFoundError, match=MALLOC_ENV_VAR):
        find_fast_allocator({MALLOC_ENV_VAR: str(tmp_path / "missing.so")}, dirs)


def test_preload_goes_first_and_once() -> None:
    env = environment_with_allocator("/x/libjemalloc.so.2", {"LD_PRELOAD": "/y/a.so:/x/libjemalloc.so.2 /z/b.so", "K": "v"})
    assert env["LD_PRELOAD"].split() == ["/x/libjemalloc.so.2", "/y/a.so", "/z/b.so"]
    assert env["K"] == "v"
    assert environment_with_allocator("/x/lib.so", {})["LD_PRELOAD"] == "/x/lib.so"


def test_no_second_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("restarted again")

    monkeypatch.setattr(os, "execve", forbidden)
    monkeypatch.setenv(_malloc._RESTARTED_ENV_VAR, "1")
    restart_with_fast_allocator(["-c", "pass"])  # returns: this process was started by a restart
    monkeypatch.delenv(_malloc._RESTARTED_ENV_VAR)
    monkeypatch.setenv(MALLOC_ENV_VAR, "0")
    restart_with_fast_allocator(["-c", "pass"])  # returns: turned off


def _provider_in_subprocess(env: dict[str, str]) -> str:
    code = "from mlx_baselines3._malloc import malloc_info; import json; print(json.dumps(malloc_info()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@linux_only
def test_default_process_uses_the_c_library() -> None:
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    info = __import__("json").loads(_provider_in_subprocess(env))
    assert os.path.basename(info["provider"]).startswith("libc.so")
    assert info["fast"] is False


@needs_installed
def test_preloaded_allocator_is_reported() -> None:
    env = environment_with_allocator(INSTALLED, {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    info = __import__("json").loads(_provider_in_subprocess(env))
    assert os.path.samefile(info["provider"], INSTALLED)
    assert info["fast"] is True
    assert malloc_info()["available"] == str(INSTALLED)


def _cli(env_update: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", MALLOC_ENV_VAR, _malloc._RESTARTED_ENV_VAR)}
    env.update(env_update)
    command = [sys.executable, "-m", "mlx_baselines3", "--timesteps", "256", "--eval-episodes", "1"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)


def _malloc_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("malloc: "))[len("malloc: ") :]


@needs_installed
def test_cli_restarts_with_the_allocator() -> None:
    run = _cli({})
    assert os.path.samefile(_malloc_line(run.stdout), INSTALLED)
    assert "Evaluation over 1 episodes" in run.stdout


@linux_only
def test_cli_keeps_default_malloc_when_off_or_missing(tmp_path: Path) -> None:
    off = _cli({MALLOC_ENV_VAR: "0"})
    assert os.path.basename(_malloc_line(off.stdout)).startswith("libc.so")
    missing = _cli({MALLOC_ENV_VAR: str(tmp_path / "nope.so")})
    assert "does not name an existing file" in missing.stderr
    assert os.path.basename(_malloc_line(missing.stdout)).startswith("libc.so")

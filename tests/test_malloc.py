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
    restart_with_fast_allocator,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is a Linux mechanism")
INSTALLED = find_fast_allocator({}) if sys.platform.startswith("linux") else None
needs_installed = pytest.mark.skipif(INSTALLED is None, reason="no jemalloc/tcmalloc/mimalloc installed")
# cmeel-mimalloc is a dependency for these two Linux architectures (pyproject.toml)
PACKAGED_PLATFORM = sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "aarch64")


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


@pytest.mark.skipif(not PACKAGED_PLATFORM, reason="cmeel-mimalloc is a dependency on Linux x86-64/aarch64 only")
def test_packaged_mimalloc_is_found_first(tmp_path: Path) -> None:
    import importlib.metadata

    packaged = _malloc.packaged_allocator()
    assert packaged is not None, "the cmeel-mimalloc dependency is not installed"
    assert packaged.is_absolute() and packaged.is_file() and packaged.name.startswith("libmimalloc.so.")
    dist_root = Path(str(importlib.metadata.distribution("cmeel-mimalloc").locate_file(""))).resolve()
    assert dist_root in packaged.parents  # the wheel's own copy, not a system one
    assert find_fast_allocator({}) == packaged  # the default search prefers it to system libraries
    dirs = _fake_libraries(tmp_path, "libjemalloc.so.2")
    assert find_fast_allocator({}, dirs) == tmp_path / "libjemalloc.so.2"  # explicit folders: only those


@linux_only
def test_env_var_turns_off_or_names_the_library(tmp_path: Path) -> None:
    dirs = _fake_libraries(tmp_path, "libjemalloc.so.2")
    assert find_fast_allocator({MALLOC_ENV_VAR: "0"}, dirs) is None
    assert find_fast_allocator({MALLOC_ENV_VAR: "off"}, dirs) is None
    assert find_fast_allocator({MALLOC_ENV_VAR: "auto"}, dirs) == tmp_path / "libjemalloc.so.2"
    custom = tmp_path / "my_malloc.so"
    custom.write_bytes(b"")
    assert find_fast_allocator({MALLOC_ENV_VAR: str(custom)}, []) == custom
    with pytest.raises(ValueError, match="does not name an existing file"):
        find_fast_allocator({MALLOC_ENV_VAR: str(tmp_path / "missing.so")}, dirs)


def test_preload_goes_first_and_once() -> None:
    env = environment_with_allocator("/x/libjemalloc.so.2", {"LD_PRELOAD": "/y/a.so:/x/libjemalloc.so.2 /z/b.so", "K": "v"})
    assert env["LD_PRELOAD"].split() == ["/x/libjemalloc.so.2", "/y/a.so", "/z/b.so"]
    assert env["K"] == "v"
    assert environment_with_allocator("/x/lib.so", {})["LD_PRELOAD"] == "/x/lib.so"


def _record_exec(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], dict[str, str]]]:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, list(argv), dict(env))))
    return calls


@linux_only
def test_restart_only_over_glibc_malloc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls = _record_exec(monkeypatch)
    monkeypatch.delenv(_malloc._RESTARTED_ENV_VAR, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/x/other.so")
    monkeypatch.setattr(_malloc, "find_fast_allocator", lambda: Path("/x/libjemalloc.so.2"))
    monkeypatch.setattr(_malloc, "malloc_provider", lambda: "/x/libasan.so.8")
    restart_with_fast_allocator()  # a sanitizer (or any preloaded malloc) is left alone
    assert calls == []
    monkeypatch.setattr(_malloc, "malloc_provider", lambda: "/lib/x86_64-linux-gnu/libc.so.6")
    restart_with_fast_allocator()
    (path, argv, env), = calls
    assert path == sys.executable and argv == [sys.executable, *sys.orig_argv[1:]]  # options and wrappers kept
    assert env["LD_PRELOAD"].split() == ["/x/libjemalloc.so.2", "/x/other.so"]
    assert env[_malloc._RESTARTED_ENV_VAR] == "/x/libjemalloc.so.2"
    monkeypatch.setenv(MALLOC_ENV_VAR, "/no/such/libjemalloc.so.2")
    monkeypatch.setattr(_malloc, "find_fast_allocator", find_fast_allocator)  # the real search again
    restart_with_fast_allocator()  # a misnamed library: said, and not restarted
    assert len(calls) == 1
    assert "does not name an existing file" in capsys.readouterr().err


@linux_only
def test_restarted_process_does_not_restart_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _record_exec(monkeypatch)
    monkeypatch.setattr(_malloc, "find_fast_allocator", lambda: Path("/x/libjemalloc.so.2"))
    monkeypatch.setattr(_malloc, "malloc_provider", lambda: "/lib/x86_64-linux-gnu/libc.so.6")
    monkeypatch.setenv(_malloc._RESTARTED_ENV_VAR, "/x/libjemalloc.so.2")
    monkeypatch.setenv("LD_PRELOAD", "/x/libjemalloc.so.2 /x/other.so")
    restart_with_fast_allocator()  # the preload failed: said, taken out of LD_PRELOAD, no loop
    assert calls == []
    assert "could not be preloaded" in capsys.readouterr().err
    assert os.environ["LD_PRELOAD"] == "/x/other.so"
    assert _malloc._RESTARTED_ENV_VAR not in os.environ


@linux_only
def test_explicit_setting_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = _malloc.resolve_allocator_setting
    assert resolve("default") is None and resolve("off") is None
    (tmp_path / "mine.so").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve("mine.so") == tmp_path / "mine.so"  # absolute: LD_PRELOAD ignores bare names
    (tmp_path / "a b.so").write_bytes(b"")
    with pytest.raises(ValueError, match="space or colon"):
        resolve(str(tmp_path / "a b.so"))
    with pytest.raises(ValueError, match=MALLOC_ENV_VAR):
        resolve("/" + "a" * 300 + "/x.so")  # ENAMETOOLONG from the file system: still a ValueError


@linux_only
def test_system_info_never_raises_on_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlx_baselines3.common.serialization import get_system_info

    monkeypatch.setenv(MALLOC_ENV_VAR, "/" + "a" * 300 + "/x.so")
    info, _ = get_system_info(print_info=False)
    assert info["malloc"].startswith(_malloc.malloc_provider() or "")


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
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", MALLOC_ENV_VAR)}
    env = environment_with_allocator(INSTALLED, clean)
    info = __import__("json").loads(_provider_in_subprocess(env))
    assert os.path.samefile(info["provider"], INSTALLED)
    assert info["fast"] is True and info["c_library"] is False
    assert info["available"] == str(INSTALLED)


def _cli(env_update: dict[str, str], *wrapper: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", MALLOC_ENV_VAR, _malloc._RESTARTED_ENV_VAR)}
    env.update(env_update)
    command = [sys.executable, *wrapper, "-m", "mlx_baselines3", "--timesteps", "256", "--eval-episodes", "1"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=True)


def _malloc_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("malloc: "))[len("malloc: ") :]


@needs_installed
def test_cli_restarts_with_the_allocator() -> None:
    run = _cli({})
    assert os.path.samefile(_malloc_line(run.stdout), INSTALLED)
    assert "Evaluation over 1 episodes" in run.stdout


@needs_installed
def test_cli_restart_keeps_wrappers_and_a_named_library(tmp_path: Path) -> None:
    profile = tmp_path / "cli.prof"
    run = _cli({MALLOC_ENV_VAR: str(INSTALLED)}, "-m", "cProfile", "-o", str(profile))
    assert os.path.samefile(_malloc_line(run.stdout), INSTALLED)  # and it did not restart in a loop
    assert profile.stat().st_size > 0  # cProfile ran around the restarted command


@linux_only
def test_cli_prints_the_library_to_preload(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", MALLOC_ENV_VAR, _malloc._RESTARTED_ENV_VAR)}

    def printed(setting: str) -> str:
        env = dict(base, **{MALLOC_ENV_VAR: setting})
        command = [sys.executable, "-m", "mlx_baselines3", "--print-malloc"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True).stdout

    assert printed("auto").strip() == str(INSTALLED or "")
    assert printed("off") == "\n"  # nothing to preload: an empty line, usable as LD_PRELOAD=
    mine = tmp_path / "mine.so"
    mine.write_bytes(b"")
    assert printed(str(mine)).strip() == str(mine)


@linux_only
def test_cli_keeps_default_malloc_when_off_or_missing(tmp_path: Path) -> None:
    off = _cli({MALLOC_ENV_VAR: "0"})
    assert os.path.basename(_malloc_line(off.stdout)).startswith("libc.so")
    missing = _cli({MALLOC_ENV_VAR: str(tmp_path / "nope.so")})
    assert "does not name an existing file" in missing.stderr
    assert os.path.basename(_malloc_line(missing.stdout)).startswith("libc.so")

"""MLX's run-time compiled CPU kernels get vectorisation flags through a g++ wrapper (Linux)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlx_baselines3._jit import DEFAULT_FLAGS, JIT_ENV_VAR

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("g++") is None,
    reason="MLX compiles CPU kernels with g++ on Linux",
)

# Fused kernels of the kinds training compiles: an Adam update with three outputs and a square
# root, a ReLU with its gradient mask, tanh/exp/log of a squashed-Gaussian log-probability.
_PROGRAM = r"""
import json, sys
import numpy as np
import mlx_baselines3
import mlx.core as mx

def adam(p, m, v, g, c1, c2):
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    return p - c1 * m / (mx.sqrt(v) * c2 + 1e-8), m, v

def relu_and_mask(x, g):
    return mx.maximum(x, 0.0), g * (x > 0)

def squashed(u, mean, log_std):
    a = mx.tanh(u)
    return -0.5 * ((u - mean) / mx.exp(log_std)) ** 2 - log_std - mx.log(1 - a * a + 1e-6), a

rng = np.random.default_rng(0)
arrays = [mx.array(rng.standard_normal((37, 129)).astype(np.float32)) for _ in range(4)]
arrays[2] = mx.abs(arrays[2])  # Adam's second moment
scalars = [mx.array(np.float32(0.01)), mx.array(np.float32(1.3))]
outputs = [*mx.compile(adam)(*arrays, *scalars), *mx.compile(relu_and_mask)(*arrays[:2]),
           *mx.compile(squashed)(*arrays[:3])]
mx.eval(outputs)
np.savez(sys.argv[1], *[np.array(out) for out in outputs])
print(json.dumps({"info": mlx_baselines3.jit_info(), "PATH": __import__("os").environ["PATH"],
                  "TEMPDIR": __import__("os").environ.get("TEMPDIR")}))
"""


def _run(
    tmp_path: Path,
    name: str,
    flags: str | None,
    cache_home: Path | None = None,
    temp_dir: Path | None = None,
    env_overrides: dict[str, str] | None = None,
) -> tuple[dict, list[np.ndarray]]:
    """Run the program in a fresh interpreter; its jit_info, environment and outputs."""
    env = {key: value for key, value in os.environ.items() if key not in ("TMPDIR", "TMP", "TEMP", "TEMPDIR")}
    env.pop(JIT_ENV_VAR, None)
    if flags is not None:
        env[JIT_ENV_VAR] = flags
    if cache_home is not None:
        env["XDG_CACHE_HOME"] = str(cache_home)
    if temp_dir is not None:
        temp_dir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(temp_dir)
    env.update(env_overrides or {})
    out_file = tmp_path / f"{name}.npz"
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, str(out_file)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(out_file) as data:
        outputs = [data[key] for key in sorted(data.files, key=lambda key: int(key.split("_")[1]))]
    return report, outputs


def _kernel_libraries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("mlx/*/cpu/lib*.so"))


def _scalar_reference(tmp_path: Path) -> list[np.ndarray]:
    """Outputs with MLX's own compile command, kernels cached in a folder of their own."""
    report, outputs = _run(tmp_path, "off", "0", temp_dir=tmp_path / "off")
    assert not report["info"]["active"] and JIT_ENV_VAR in report["info"]["reason"]
    libraries = _kernel_libraries(tmp_path / "off")
    assert libraries and not any(b"vect-max-version" in path.read_bytes() for path in libraries)
    return outputs


def test_flags_reach_mlx_kernel_compiles_and_results_are_bit_identical(tmp_path: Path) -> None:
    # -frecord-gcc-switches stores the command line in the library: proof the flags were used
    recorded = f"{DEFAULT_FLAGS} -frecord-gcc-switches"
    report, vectorised = _run(tmp_path, "on", recorded, cache_home=tmp_path / "on")
    info = report["info"]
    assert info["active"] and info["flags"] == recorded
    assert report["PATH"].split(os.pathsep)[0] == str(Path(info["wrapper"]).parent)
    assert Path(info["wrapper"]).is_relative_to(tmp_path / "on" / "mlx_baselines3")
    assert report["TEMPDIR"] and info["kernel_cache"] == str(Path(report["TEMPDIR"]) / "mlx")
    libraries = _kernel_libraries(tmp_path / "on")
    assert libraries, "MLX compiled no kernel into its cache"
    assert all(b"vect-max-version-for-alias-checks" in path.read_bytes() for path in libraries)

    scalar = _scalar_reference(tmp_path)
    assert len(vectorised) == len(scalar) == 7
    for fast, reference in zip(vectorised, scalar):
        assert np.isfinite(reference).all()
        assert fast.dtype == reference.dtype and np.array_equal(fast, reference), "results must not change"


def test_failing_flags_fall_back_to_a_plain_compile(tmp_path: Path) -> None:
    reference = _scalar_reference(tmp_path)
    report, outputs = _run(tmp_path, "bad", "-fno-such-flag-exists", cache_home=tmp_path / "bad")
    assert report["info"]["active"]
    assert _kernel_libraries(tmp_path / "bad")
    for value, expected in zip(outputs, reference):
        assert np.array_equal(value, expected)


def test_other_flags_get_another_kernel_folder_and_temp_variables_turn_it_off(tmp_path: Path) -> None:
    default, _ = _run(tmp_path, "default", None, cache_home=tmp_path / "home")
    other, _ = _run(tmp_path, "other", "-O2", cache_home=tmp_path / "home")
    assert default["info"]["active"] and other["info"]["active"]
    assert default["info"]["flags"] == DEFAULT_FLAGS and other["info"]["flags"] == "-O2"
    assert default["TEMPDIR"] != other["TEMPDIR"]
    assert Path(default["info"]["wrapper"]).parent != Path(other["info"]["wrapper"]).parent

    # With TMPDIR set MLX would cache kernels there, mixed with others: leave MLX alone
    shared, _ = _run(tmp_path, "shared", None, cache_home=tmp_path / "home", temp_dir=tmp_path / "shared")
    assert not shared["info"]["active"] and "TMPDIR" in shared["info"]["reason"]
    assert shared["TEMPDIR"] is None
    assert not _kernel_libraries(tmp_path / "shared") or not any(
        b"vect-max-version" in path.read_bytes() for path in _kernel_libraries(tmp_path / "shared")
    )


def test_turned_off_in_a_child_undoes_the_parents_setup(tmp_path: Path) -> None:
    parent, _ = _run(tmp_path, "parent", None, cache_home=tmp_path / "home")
    inherited = {"PATH": parent["PATH"], "TEMPDIR": parent["TEMPDIR"]}
    child, _ = _run(tmp_path, "child", "0", cache_home=tmp_path / "home", env_overrides=inherited)
    assert not child["info"]["active"]
    assert str(Path(parent["info"]["wrapper"]).parent) not in child["PATH"].split(os.pathsep)
    assert child["TEMPDIR"] is None
    # A child that keeps it on reuses the parent's folders without adding PATH entries
    again, _ = _run(tmp_path, "again", None, cache_home=tmp_path / "home", env_overrides=inherited)
    assert again["info"]["active"] and again["TEMPDIR"] == parent["TEMPDIR"]
    assert again["PATH"].split(os.pathsep).count(str(Path(parent["info"]["wrapper"]).parent)) == 1


def test_compiler_that_searches_path_again_does_not_loop(tmp_path: Path) -> None:
    # Like ccache's link folder: a g++ that runs the next g++ on PATH other than itself
    links = tmp_path / "links"
    links.mkdir()
    fake = links / "g++"
    fake.write_text(
        "#!/bin/sh\n"
        'depth=$((${FAKE_GXX_DEPTH:-0} + 1)); export FAKE_GXX_DEPTH=$depth\n'
        '[ "$depth" -gt 3 ] && { echo "g++ called itself again" >&2; exit 99; }\n'
        "IFS=:\n"
        'for entry in $PATH; do [ "$entry" = "' + str(links) + '" ] && continue\n'
        '  [ -x "$entry/g++" ] && exec "$entry/g++" "$@"; done\n'
        "exit 98\n"
    )
    fake.chmod(0o755)
    path = os.pathsep.join([str(links), os.environ["PATH"]])
    report, outputs = _run(tmp_path, "ccache", None, cache_home=tmp_path / "home", env_overrides={"PATH": path})
    assert report["info"]["active"] and report["info"]["compiler"] == str(fake)
    assert _kernel_libraries(tmp_path / "home")
    assert len(outputs) == 7


def test_other_compiler_commands_pass_through_unchanged(tmp_path: Path) -> None:
    report, _ = _run(tmp_path, "on", None, cache_home=tmp_path / "home")
    wrapper = report["info"]["wrapper"]
    real = report["info"]["compiler"]
    # The predefined macros depend on -march: any added flag would show here
    command = ["-dM", "-E", "-x", "c++", "/dev/null"]
    through_wrapper = subprocess.run([wrapper, *command], capture_output=True, text=True, check=True).stdout
    direct = subprocess.run([real, *command], capture_output=True, text=True, check=True).stdout
    assert through_wrapper == direct
    version = subprocess.run([wrapper, "--version"], capture_output=True, text=True, check=True).stdout
    assert version == subprocess.run([real, "--version"], capture_output=True, text=True, check=True).stdout


def test_folder_writable_by_others_is_not_used(tmp_path: Path) -> None:
    home = tmp_path / "home"
    unsafe = home / "mlx_baselines3"
    unsafe.mkdir(parents=True)
    unsafe.chmod(0o777)
    report, _ = _run(tmp_path, "unsafe", None, cache_home=home)
    info = report["info"]
    assert not any(path.name == "bin" for path in unsafe.rglob("*"))
    # It falls back to the system temporary folder, or says why it could not
    assert (info["active"] and not Path(info["wrapper"]).is_relative_to(unsafe)) or "writable only by it" in info[
        "reason"
    ]


def test_flags_that_cannot_be_split_are_reported(tmp_path: Path) -> None:
    report, _ = _run(tmp_path, "quote", "-O3 '-march=native", cache_home=tmp_path / "home")
    assert not report["info"]["active"] and "cannot be split" in report["info"]["reason"]
    assert report["TEMPDIR"] is None

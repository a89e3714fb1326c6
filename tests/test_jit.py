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


def _run(tmp_path: Path, name: str, flags: str | None, temp_dir: Path | None = None) -> tuple[dict, list[np.ndarray]]:
    """Run the program in a fresh interpreter; its jit_info, environment and outputs."""
    env = {key: value for key, value in os.environ.items() if key not in ("TMPDIR", "TMP", "TEMP", "TEMPDIR")}
    env.pop(JIT_ENV_VAR, None)
    if flags is not None:
        env[JIT_ENV_VAR] = flags
    if temp_dir is not None:
        temp_dir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(temp_dir)
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


def test_flags_reach_mlx_kernel_compiles_and_results_are_bit_identical(tmp_path: Path) -> None:
    # -frecord-gcc-switches stores the command line in the library: proof the flags were used
    recorded = f"{DEFAULT_FLAGS} -frecord-gcc-switches"
    report, vectorised = _run(tmp_path, "on", recorded, temp_dir=tmp_path / "on")
    info = report["info"]
    assert info["active"] and info["flags"] == recorded
    assert report["PATH"].split(os.pathsep)[0] == str(Path(info["wrapper"]).parent)
    libraries = _kernel_libraries(tmp_path / "on")
    assert libraries, "MLX compiled no kernel into its cache"
    assert all(b"vect-max-version-for-alias-checks" in path.read_bytes() for path in libraries)

    off_report, scalar = _run(tmp_path, "off", "0", temp_dir=tmp_path / "off")
    assert not off_report["info"]["active"] and JIT_ENV_VAR in off_report["info"]["reason"]
    off_libraries = _kernel_libraries(tmp_path / "off")
    assert off_libraries and not any(b"vect-max-version" in path.read_bytes() for path in off_libraries)

    assert len(vectorised) == len(scalar) == 7
    for fast, reference in zip(vectorised, scalar):
        assert np.isfinite(reference).all()
        assert fast.dtype == reference.dtype and np.array_equal(fast, reference), "results must not change"


def test_failing_flags_fall_back_to_a_plain_compile(tmp_path: Path) -> None:
    _, reference = _run(tmp_path, "off", "0", temp_dir=tmp_path / "off")
    report, outputs = _run(tmp_path, "bad", "-fno-such-flag-exists", temp_dir=tmp_path / "bad")
    assert report["info"]["active"]
    assert _kernel_libraries(tmp_path / "bad")
    for value, expected in zip(outputs, reference):
        assert np.array_equal(value, expected)


def test_kernel_cache_gets_its_own_folder_only_when_no_temp_variable_is_set(tmp_path: Path) -> None:
    report, _ = _run(tmp_path, "own", None)
    info = report["info"]
    assert info["active"] and info["flags"] == DEFAULT_FLAGS
    assert report["TEMPDIR"] and info["kernel_cache"] == str(Path(report["TEMPDIR"]) / "mlx")
    assert Path(report["TEMPDIR"]).name.startswith("kernels-")

    shared, _ = _run(tmp_path, "shared", None, temp_dir=tmp_path / "shared")
    assert shared["info"]["active"] and shared["info"]["kernel_cache"] is None
    assert shared["TEMPDIR"] is None


def test_other_compiler_commands_pass_through_unchanged(tmp_path: Path) -> None:
    report, _ = _run(tmp_path, "on", None, temp_dir=tmp_path / "on")
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
    temp_dir = tmp_path / "shared_tmp"
    temp_dir.mkdir()
    base = temp_dir / f"mlx_baselines3-{os.getuid()}"
    base.mkdir()
    base.chmod(0o777)
    report, _ = _run(tmp_path, "unsafe", None, temp_dir=temp_dir)
    assert not report["info"]["active"]
    assert "writable only by it" in report["info"]["reason"]
    assert not (base / "bin").exists()

"""mlx_baselines3: Stable-Baselines3-compatible reinforcement learning on Apple's MLX."""


from mlx_baselines3._blas import blas_info, enable_optimized_blas, set_blas_num_threads
from mlx_baselines3._jit import enable_vectorized_kernels, jit_info
from mlx_baselines3.a2c import A2C
from mlx_baselines3.ddpg import DDPG
from mlx_baselines3.dqn import DQN
from mlx_baselines3.ppo import PPO
from mlx_baselines3.sac import SAC
from mlx_baselines3.td3 import TD3
from mlx_baselines3.version import __version__

# On Linux, route MLX's CPU matrix products to OpenBLAS (see _blas.py; MLX_BASELINES3_BLAS=0 turns
# it off). It works at any time, before or after MLX's first matmul. Nothing happens on macOS.
enable_optimized_blas()
# On Linux, MLX's run-time compiled CPU kernels get vectorisation flags (see _jit.py;
# MLX_BASELINES3_JIT_FLAGS=0 turns it off). Applies to kernels compiled from now on.
enable_vectorized_kernels()

__all__ = ["A2C", "DDPG", "DQN", "PPO", "SAC", "TD3", "__version__", "blas_info", "jit_info", "set_blas_num_threads"]

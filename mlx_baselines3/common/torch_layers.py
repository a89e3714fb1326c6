"""SB3's import path for the network building blocks (there is no torch here)."""

from mlx_baselines3.common.layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
    create_mlp,
)

__all__ = [
    "BaseFeaturesExtractor",
    "CombinedExtractor",
    "FlattenExtractor",
    "MlpExtractor",
    "NatureCNN",
    "create_mlp",
]

"""The paper's generator and discriminator with resolution-native progressive growing."""

from fastprogan.models.discriminator import Discriminator
from fastprogan.models.generator import Generator
from fastprogan.models.progressive import Level, feature_maps, level_for, lod_for, resolution_log2

__all__ = ["Discriminator", "Generator", "Level", "feature_maps", "level_for", "lod_for", "resolution_log2"]

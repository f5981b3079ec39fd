"""Models built only on scanforge's public ops (``sf.selective_scan``, ``sf.selective_state_update``,
``sf.topk_gather``); every one takes ``backend=`` and passes it to the ops."""

from .adaptive import ACMamba
from .bimamba import BiMamba
from .lm import Backbone, MambaClassifier, MambaLM
from .mamba import Mamba, MambaCache
from .mamba2 import GatedRMSNorm, Mamba2, Mamba2Cache
from .multiscale import MSMamba, MSMambaCache
from .pruning import TopKTokenPruner
from .vit import DynamicDepthViT, ViT
from .vlm import TinyVLM

__all__ = ["ACMamba", "Backbone", "BiMamba", "DynamicDepthViT", "GatedRMSNorm", "MSMamba", "MSMambaCache", "Mamba",
           "Mamba2", "Mamba2Cache", "MambaCache",
           "MambaClassifier", "MambaLM", "TinyVLM", "TopKTokenPruner", "ViT"]

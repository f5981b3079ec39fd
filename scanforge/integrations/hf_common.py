"""What the transformers switches share: the version check, padding masks, the mixers' causal conv with its cache,
and accelerate's offloading hooks."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

try:
    import transformers
    from transformers.cache_utils import Cache
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("scanforge.integrations needs transformers >= 5.21: pip install 'scanforge[hf]'") from exc

MIN_TRANSFORMERS = "5.21"


def check_version(caller: str) -> None:
    """Refuse a transformers whose Cache lacks the calls the switches use."""
    if not all(hasattr(Cache, name) for name in ("get_conv_state", "get_recurrent_state", "is_recording_past")):
        raise RuntimeError(f"{caller}: transformers {transformers.__version__} is installed; "
                           f"expected >= {MIN_TRANSFORMERS} (a Cache with get_conv_state/get_recurrent_state)")


def masked(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero padded positions ((batch, L, channels) against a (batch, L) mask), keeping the dtype."""
    if attention_mask is None:
        return hidden_states
    return (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)


def conv_and_activate(self, x: torch.Tensor, cache, conv_state: torch.Tensor | None) -> torch.Tensor:
    """The mixer's causal depthwise conv and activation on x (batch, d, L), reading and updating the cache."""
    seq_len, K = x.shape[-1], self.conv_kernel_size
    weight, bias = self.conv1d.weight, self.conv1d.bias
    if conv_state is not None and seq_len == 1 and not cache.is_recording_past(self.layer_idx):
        window = torch.cat([conv_state, x], dim=-1).to(weight.dtype)
        conv_state.copy_(window[..., -conv_state.shape[-1]:])
        # One output per channel: a multiply-sum (a depthwise F.conv1d this small costs milliseconds on CPU).
        out = (window[..., -K:] * weight[:, 0, :]).sum(-1, keepdim=True)
        out = out if bias is None else out + bias[:, None]
    else:
        full = x if cache is None else cache.update_conv_state(x, self.layer_idx, conv_kernel_size=K)
        out = F.conv1d(full.to(weight.dtype), weight, bias, padding=K - 1, groups=x.shape[1])
        out = out[..., : full.shape[-1]][..., -seq_len:]
    return self.act(out).to(x.dtype)


def with_accelerate_hooks(forward: Callable, children: list[str]) -> Callable:
    """Fire the offloading hooks of the children whose weights are read directly, as the original does."""
    try:
        from transformers.integrations.accelerate import force_accelerate_hooks
    except ImportError:  # pragma: no cover - older layouts
        return forward
    return force_accelerate_hooks(children)(forward)

"""What the transformers switches share: the version check, padding masks, the mixers' causal conv with its cache,
accelerate's offloading hooks, and the switch itself (:class:`MixerSwitch`)."""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

try:
    import transformers
    from transformers.cache_utils import Cache
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("scanforge.integrations needs transformers >= 5.21: pip install 'scanforge[hf]'") from exc

from .. import backends

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


class MixerSwitch:
    """Runs a transformers mixer class on scanforge: its ``forward`` replaced by ``make_forward(backend)``, for one
    model's mixers or for the class (every model without a per-model setting), and put back on revert."""

    ATTR = "_scanforge_backend"  # set on patched forwards: the backend name, or None for the device's choice

    def __init__(self, mixer_class: type, make_forward: Callable, caller: str):
        self.mixer_class, self.make_forward, self.caller = mixer_class, make_forward, caller
        self.original: Callable | None = None

    def mixers(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.modules() if isinstance(m, self.mixer_class)]

    def apply(self, model: nn.Module | None, backend: str | None) -> nn.Module | None:
        check_version(self.caller)
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend: expected None or a backend name, got {backend!r}")
        if backend is not None:
            backends.get(backend)  # an unknown name fails here, not at the first forward
        forward = self.make_forward(backend)
        setattr(forward, self.ATTR, backend)
        if model is None:
            if self.original is None:
                self.original = self.mixer_class.forward
            self.mixer_class.forward = forward
            return None
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module or None, got {type(model).__name__}")
        mixers = self.mixers(model)
        if not mixers:
            raise ValueError(f"model: expected a model with transformers' {self.mixer_class.__name__} layers, "
                             f"found none in {type(model).__name__}")
        for mixer in mixers:
            mixer.forward = types.MethodType(forward, mixer)
        return model

    def revert(self, model: nn.Module | None) -> nn.Module | None:
        if model is None:
            if self.original is not None:
                self.mixer_class.forward = self.original
                self.original = None
            return None
        for mixer in self.mixers(model):
            if hasattr(mixer.__dict__.get("forward"), self.ATTR):
                del mixer.forward
        return model

    def applied(self, model: nn.Module) -> bool:
        mixers = self.mixers(model)
        return bool(mixers) and all(hasattr(m.forward, self.ATTR) for m in mixers)

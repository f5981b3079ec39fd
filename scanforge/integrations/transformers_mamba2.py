"""Hugging Face transformers' Mamba-2 models on scanforge: ``apply_scanforge_to_mamba2(model)``.

The switch replaces ``Mamba2Mixer.forward`` (``transformers.models.mamba2.modeling_mamba2``, the mixer of
``Mamba2ForCausalLM``) by a forward that keeps the mixer's weights, cache handling and conventions and runs the scan
with :func:`scanforge.ssd_scan` (prefill, training) and the decode step with ``sf.selective_state_update`` (the
per-head A, dt, D expanded per channel). Without mamba-ssm, transformers runs a chunked PyTorch path instead.
Needs transformers >= 5.21: ``pip install "scanforge[hf]"``.

Not covered: a cache that keeps intermediate recurrent states (speculative decoding's
``get_recurrent_states_to_keep``): a ``NotImplementedError`` says so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

try:
    from transformers.models.mamba2 import modeling_mamba2
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("scanforge.integrations.transformers needs transformers >= 5.21: "
                      "pip install 'scanforge[hf]'") from exc

from .. import decode, ssd
from .hf_common import MixerSwitch, conv_and_activate, masked, with_accelerate_hooks

__all__ = ["apply_scanforge_to_mamba2", "is_scanforge_applied_to_mamba2", "revert_scanforge_to_mamba2"]



def _decode_step(self, state: torch.Tensor, x, dt, A, B, C, backend) -> torch.Tensor:
    """One token: ``x (batch, d)``, ``dt (batch, nheads)``, ``B, C (batch, ngroups * N)``; ``state`` updated."""
    per_channel = lambda t: t.repeat_interleave(self.head_dim, dim=-1)  # noqa: E731
    batch, N = x.shape[0], self.ssm_state_size
    flat = state.view(batch, self.intermediate_size, N)
    A_c = per_channel(A)[:, None].expand(self.intermediate_size, N)
    grouped = lambda t: t.reshape(batch, self.n_groups, N)  # noqa: E731
    return decode.selective_state_update(flat, x, per_channel(dt), A_c, grouped(B), grouped(C),
                                         per_channel(self.D.float()), None, per_channel(self.dt_bias.float()), True,
                                         backend=backend)


def _make_forward(backend: str | None) -> Callable:
    def forward(self, hidden_states: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """Mamba2Mixer's forward on scanforge's SSD scan and decode step."""
        cache = kwargs.pop("cache_params", None) if cache is None else cache
        layer = self.layer_idx
        conv_state = recurrent_state = None
        if cache is not None:
            keep = getattr(cache, "get_recurrent_states_to_keep", lambda _: 0)(layer)
            if keep:
                raise NotImplementedError("cache: keeping intermediate recurrent states (speculative decoding) is not "
                                          "supported by scanforge's Mamba-2 switch")
            conv_state = cache.get_conv_state(layer, state_idx=0)
            recurrent_state = cache.get_recurrent_state(layer, state_idx=0)
        batch, seq_len, _ = hidden_states.shape
        dtype = hidden_states.dtype
        gate, xBC, dt = self.in_proj(masked(hidden_states, attention_mask)).split(
            [self.intermediate_size, self.conv_dim, self.num_heads], dim=-1)
        xBC = masked(conv_and_activate(self, xBC.transpose(1, 2), cache, conv_state).transpose(1, 2), attention_mask)
        N = self.ssm_state_size
        x, B, C = torch.split(xBC, [self.intermediate_size, self.n_groups * N, self.n_groups * N], dim=-1)
        A = -torch.exp(self.A_log.float())
        if recurrent_state is not None and seq_len == 1:
            next_state = recurrent_state.clone()  # out of place, as transformers' path (a cache may record history)
            y = _decode_step(self, next_state, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], backend)[:, None]
            cache.update_recurrent_state(next_state, layer)
        else:
            grouped = lambda t: t.reshape(batch, seq_len, self.n_groups, N).permute(0, 2, 3, 1)  # noqa: E731
            result = ssd.ssd_scan(x.transpose(1, 2), dt.transpose(1, 2), A, grouped(B), grouped(C), self.D.float(),
                                  None, self.dt_bias.float(), True, dt_limit=tuple(self.time_step_limit),
                                  initial_state=recurrent_state, return_last_state=cache is not None,
                                  backend=backend)
            y = (result[0] if cache is not None else result).transpose(1, 2)
            if cache is not None:
                cache.update_recurrent_state(result[1], layer)
        return self.out_proj(self.norm(y, gate).to(dtype))

    return with_accelerate_hooks(forward, ["conv1d"])


_SWITCH = MixerSwitch(modeling_mamba2.Mamba2Mixer, _make_forward, "apply_scanforge_to_mamba2")


def apply_scanforge_to_mamba2(model: nn.Module | None = None, *, backend: str | None = None) -> nn.Module | None:
    """Run transformers' Mamba-2 mixers on scanforge's SSD scan and decode step.

    Args:
        model: a model holding ``Mamba2Mixer`` modules (e.g. ``Mamba2ForCausalLM``): switch its mixers only.
            None: switch the class, i.e. every Mamba-2 model without a per-model setting.
        backend: scanforge backend name, or None for the device's choice.

    Returns the model (None when switching the class). Undo with :func:`revert_scanforge_to_mamba2`.
    """
    return _SWITCH.apply(model, backend)


def revert_scanforge_to_mamba2(model: nn.Module | None = None) -> nn.Module | None:
    """Undo :func:`apply_scanforge_to_mamba2` for ``model``'s mixers, or for the class when model is None."""
    return _SWITCH.revert(model)


def is_scanforge_applied_to_mamba2(model: nn.Module) -> bool:
    """Whether every Mamba2Mixer of ``model`` (or this mixer) runs on scanforge."""
    return _SWITCH.applied(model)


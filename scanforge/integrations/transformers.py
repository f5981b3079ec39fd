"""Hugging Face transformers' Mamba models on scanforge: ``apply_scanforge_to_mamba(model)``.

The switch replaces ``MambaMixer.forward`` (``transformers.models.mamba.modeling_mamba``) by a
forward that keeps the mixer's weights, cache handling and conventions and runs the selective scan
(prefill, training) and the decode step (generation) with scanforge's ops. Without mamba-ssm,
transformers runs a Python loop over time instead. Needs transformers >= 5.21 (the cache with
``get_conv_state`` / ``get_recurrent_state``): ``pip install "scanforge[hf]"``.

One behaviour differs on purpose: a multi-token call that continues a cached state (chunked
prefill, candidate tokens of assisted decoding) starts its scan from the cached state; the
installed fallback restarts from zeros there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

try:
    from transformers.models.mamba import modeling_mamba
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("scanforge.integrations.transformers needs transformers >= 5.21: "
                      "pip install 'scanforge[hf]'") from exc

from .. import decode, ops
from .hf_common import MixerSwitch, conv_and_activate, masked, with_accelerate_hooks

__all__ = ["apply_scanforge_to_mamba", "apply_scanforge_to_mamba2", "is_scanforge_applied",
           "is_scanforge_applied_to_mamba2", "revert_scanforge_to_mamba", "revert_scanforge_to_mamba2"]



def _make_forward(backend: str | None) -> Callable:
    def forward(self, hidden_states: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """MambaMixer's forward on scanforge's selective scan and decode step."""
        cache = kwargs.pop("cache_params", None) if cache is None else cache
        layer = self.layer_idx
        conv_state = recurrent_state = None
        if cache is not None:
            conv_state = cache.get_conv_state(layer, state_idx=0)
            recurrent_state = cache.get_recurrent_state(layer, state_idx=0)
        seq_len, dtype = hidden_states.shape[1], hidden_states.dtype

        x, z = self.in_proj(masked(hidden_states, attention_mask)).transpose(1, 2).chunk(2, dim=1)
        x = masked(conv_and_activate(self, x, cache, conv_state).transpose(1, 2), attention_mask)  # (batch, L, d)
        dt, B, C = torch.split(self.x_proj(x), [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        dt = self.dt_proj.weight @ dt.transpose(1, 2)  # (batch, d, L); the bias is added (in fp32) by the kernel
        dt_bias = None if self.dt_proj.bias is None else self.dt_proj.bias.float()
        A = -torch.exp(self.A_log.float())
        u = x.transpose(1, 2)

        if recurrent_state is not None and seq_len == 1:
            y = decode.selective_state_update(recurrent_state, u[..., 0], dt[..., 0], A, B[:, 0], C[:, 0], self.D,
                                              z[..., 0], dt_bias, True, backend=backend).unsqueeze(-1)
        else:
            result = ops.selective_scan(u, dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z, dt_bias,
                                        True, initial_state=recurrent_state, return_last_state=cache is not None,
                                        backend=backend)
            if cache is None:
                y = result
            else:
                y, last_state = result
                cache.update_recurrent_state(last_state, layer)
        return self.out_proj(y.transpose(1, 2).to(dtype))

    return with_accelerate_hooks(forward, ["conv1d", "dt_proj"])


_SWITCH = MixerSwitch(modeling_mamba.MambaMixer, _make_forward, "apply_scanforge_to_mamba")


def apply_scanforge_to_mamba(model: nn.Module | None = None, *, backend: str | None = None) -> nn.Module | None:
    """Run transformers' Mamba mixers on scanforge's scan and decode step.

    Args:
        model: a model holding ``MambaMixer`` modules (e.g. ``MambaForCausalLM``): switch its mixers
            only. None: switch the class, i.e. every Mamba model, existing or created afterwards,
            that has no per-model setting.
        backend: scanforge backend name, or None for the device's choice (CPU: ``numba_cpu``).

    Returns the model (None when switching the class). Undo with :func:`revert_scanforge_to_mamba`.
    """
    return _SWITCH.apply(model, backend)


def revert_scanforge_to_mamba(model: nn.Module | None = None) -> nn.Module | None:
    """Undo :func:`apply_scanforge_to_mamba`: for ``model``'s mixers (their per-model setting is
    removed), or for the class when model is None. Reverting what was not switched does nothing."""
    return _SWITCH.revert(model)


def is_scanforge_applied(mixer: nn.Module) -> bool:
    """Whether this MambaMixer (or every mixer of this model) runs on scanforge."""
    return _SWITCH.applied(mixer)


from .transformers_mamba2 import (  # noqa: E402  (Mamba-2's switch, under the same module)
    apply_scanforge_to_mamba2,
    is_scanforge_applied_to_mamba2,
    revert_scanforge_to_mamba2,
)

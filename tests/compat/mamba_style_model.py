"""A small Mamba language model written the way mamba-ssm's own modules are (``mamba_simple.Mamba``, ``Block``,
``MixerModel``, ``MambaLMHeadModel`` and its greedy decoding): it imports its ops by mamba-ssm's and
causal-conv1d's module paths and knows nothing of scanforge. The compat tests import it with the import hook
installed, as a user's model module would be.

Fast path: ``mamba_inner_fn``. Slow path (when a cache is kept): ``causal_conv1d_fn`` + ``selective_scan_fn``
with the last state. Decoding: ``causal_conv1d_update`` + ``selective_state_update``. Blocks add the residual and
normalise in one ``rms_norm_fn`` call (prenorm, residual kept in float32).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn

try:
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
except ImportError:
    causal_conv1d_fn, causal_conv1d_update = None, None
try:
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
except ImportError:
    selective_state_update = None
try:
    from mamba_ssm.ops.triton.layer_norm import RMSNorm, layer_norm_fn, rms_norm_fn
except ImportError:
    RMSNorm, layer_norm_fn, rms_norm_fn = None, None, None


class InferenceParams:
    """What generation carries between calls: the offset reached and each layer's (conv_state, ssm_state)."""

    def __init__(self, max_seqlen, max_batch_size):
        self.max_seqlen, self.max_batch_size = max_seqlen, max_batch_size
        self.seqlen_offset = 0
        self.key_value_memory_dict = {}


class MambaMixer(nn.Module):
    def __init__(self, d_model, d_state=4, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 use_fast_path=True, layer_idx=None):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path, self.layer_idx = use_fast_path, layer_idx
        self.activation = "silu"
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) = dt
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden_states, inference_params=None):
        batch, seqlen, _ = hidden_states.shape
        conv_state, ssm_state = None, None
        if inference_params is not None:
            conv_state, ssm_state = self._states(inference_params, batch)
            if inference_params.seqlen_offset > 0:
                out, _, _ = self.step(hidden_states, conv_state, ssm_state)
                return out
        xz = (hidden_states @ self.in_proj.weight.t()).transpose(1, 2)  # (b, 2 d_inner, L)
        A = -torch.exp(self.A_log.float())
        if self.use_fast_path and causal_conv1d_fn is not None and inference_params is None:
            return mamba_inner_fn(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                                  self.out_proj.weight, self.out_proj.bias, A, None, None, self.D.float(),
                                  delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        x, z = xz.chunk(2, dim=1)
        if conv_state is not None:
            conv_state.copy_(F.pad(x, (self.d_conv - x.shape[-1], 0)))
        x = causal_conv1d_fn(x=x, weight=self.conv1d.weight.squeeze(1), bias=self.conv1d.bias,
                             activation=self.activation)
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(batch * seqlen, self.d_inner))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).reshape(self.d_inner, batch, seqlen).transpose(0, 1)
        B = B.reshape(batch, seqlen, self.d_state).transpose(1, 2).contiguous()
        C = C.reshape(batch, seqlen, self.d_state).transpose(1, 2).contiguous()
        y = selective_scan_fn(x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                              delta_softplus=True, return_last_state=ssm_state is not None)
        if ssm_state is not None:
            y, last_state = y
            ssm_state.copy_(last_state)
        return self.out_proj(y.transpose(1, 2))

    def step(self, hidden_states, conv_state, ssm_state):
        xz = self.in_proj(hidden_states.squeeze(1))
        x, z = xz.chunk(2, dim=-1)
        x = causal_conv1d_update(x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.activation)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # the bias is added by the step
        A = -torch.exp(self.A_log.float())
        y = selective_state_update(ssm_state, x, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias,
                                   dt_softplus=True)
        return self.out_proj(y).unsqueeze(1), conv_state, ssm_state

    def _states(self, inference_params, batch):
        cache = inference_params.key_value_memory_dict
        if self.layer_idx not in cache:
            weight = self.conv1d.weight
            cache[self.layer_idx] = (weight.new_zeros(batch, self.d_inner, self.d_conv),
                                     weight.new_zeros(batch, self.d_inner, self.d_state))
        return cache[self.layer_idx]


class Block(nn.Module):
    """Add the residual and normalise (one fused call), then mix."""

    def __init__(self, dim, mixer, residual_in_fp32=True):
        super().__init__()
        self.norm, self.mixer, self.residual_in_fp32 = RMSNorm(dim), mixer, residual_in_fp32

    def forward(self, hidden_states, residual=None, inference_params=None):
        hidden_states, residual = rms_norm_fn(hidden_states, self.norm.weight, self.norm.bias, residual=residual,
                                              prenorm=True, residual_in_fp32=self.residual_in_fp32,
                                              eps=self.norm.eps)
        return self.mixer(hidden_states, inference_params=inference_params), residual


class MambaLM(nn.Module):
    def __init__(self, vocab_size, d_model, n_layer, use_fast_path=True, **mixer_kwargs):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            Block(d_model, MambaMixer(d_model, use_fast_path=use_fast_path, layer_idx=i, **mixer_kwargs))
            for i in range(n_layer))
        self.norm_f = RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embedding.weight

    def forward(self, input_ids, inference_params=None):
        hidden_states, residual = self.embedding(input_ids), None
        for layer in self.layers:
            hidden_states, residual = layer(hidden_states, residual, inference_params=inference_params)
        hidden_states = layer_norm_fn(hidden_states, self.norm_f.weight, self.norm_f.bias, eps=self.norm_f.eps,
                                      residual=residual, prenorm=False, residual_in_fp32=True, is_rms_norm=True)
        return self.lm_head(hidden_states)

    @torch.inference_mode()
    def generate(self, input_ids, max_new_tokens):
        """Greedy decoding: one prefill call that fills the caches, then one step per new token."""
        params = InferenceParams(input_ids.shape[1] + max_new_tokens, input_ids.shape[0])
        logits = self(input_ids, inference_params=params)[:, -1]
        params.seqlen_offset += input_ids.shape[1]
        tokens = []
        for _ in range(max_new_tokens):
            tokens.append(logits.argmax(-1))
            logits = self(tokens[-1][:, None], inference_params=params)[:, -1]
            params.seqlen_offset += 1
        return torch.stack(tokens, 1)

"""EHRMamba: a Mamba foundation model over tokenized patient timelines.

One readable file in the style of Hugging Face modeling files:

- ``EHRMambaConfig``: sizes and presets (``tiny``, ``small``, ``paper``, ``long``).
- ``EHRMambaEmbeddings``: concept embedding concatenated with learned-sinusoid time (weeks)
  and age (years) features, projected back to the hidden size; token-type, visit-order and
  visit-segment embeddings added; dropout; LayerNorm (as in the EHRMamba paper).
- ``MambaMixer``: the Mamba (S6) mixer with the parameter names and shapes of mamba_ssm's
  ``Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so a checkpoint trained
  with mamba_ssm's CUDA kernels loads here. The selective scan runs on mamba_ssm's CUDA kernel
  when the tensors are on CUDA and mamba_ssm is importable, otherwise on the numba CPU scan.
- ``EHRMambaModel`` (backbone), ``EHRMambaForPretraining`` (next-token LM head).
- Recurrent inference: ``allocate_inference_cache(batch)`` + ``step(...)`` advance one token
  at a time from a fixed-size (conv, ssm) state per layer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ehrmamba.model.conv_cpu import causal_conv1d_silu
from ehrmamba.model.scan_cpu import selective_scan_channels_last as selective_scan_cpu
from ehrmamba.model.scan_cpu import selective_scan_ref

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IGNORE_INDEX = -100


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "state_size": 16, "max_seq_length": 256},
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "state_size": 16,
        "max_seq_length": 1024,
    },
    "paper": {
        "hidden_size": 768,
        "num_hidden_layers": 32,
        "state_size": 16,
        "expand": 2,
        "conv_kernel": 4,
        "max_seq_length": 2048,
    },
    "long": {
        "hidden_size": 768,
        "num_hidden_layers": 32,
        "state_size": 16,
        "expand": 2,
        "conv_kernel": 4,
        "max_seq_length": 16384,
    },
}


@dataclass
class EHRMambaConfig:
    vocab_size: int = 1024
    hidden_size: int = 64
    num_hidden_layers: int = 2
    state_size: int = 16
    expand: int = 2
    conv_kernel: int = 4
    dt_rank: int | None = None  # None: ceil(hidden_size / 16), as mamba_ssm
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    max_seq_length: int = 256
    pad_token_id: int = 0
    type_vocab_size: int = 16  # token types (concept kinds, special tokens)
    max_visits: int = 512  # visit-order embedding size (visit index, clipped)
    visit_segments: int = 3  # visit-segment embedding size (0 pad, 1/2 alternating visits)
    time_embedding_size: int = 32  # learned sinusoid features per time input
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12  # embedding LayerNorm
    rms_norm: bool = True  # block norm: RMSNorm (mamba default) or LayerNorm
    norm_eps: float = 1e-5  # block norm eps
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    preset_name: str | None = None  # the preset this config came from, if any
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.hidden_size / 16)

    @property
    def d_inner(self) -> int:
        return self.expand * self.hidden_size

    @classmethod
    def preset_names(cls) -> list[str]:
        return list(_PRESETS)

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> EHRMambaConfig:
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        values = {**_PRESETS[name], "vocab_size": vocab_size, "preset_name": name, **overrides}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EHRMambaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown EHRMambaConfig fields: {unknown}")
        return cls(**values)


# --------------------------------------------------------------------------------------
# Selective scan dispatch
# --------------------------------------------------------------------------------------


def mamba_ssm_is_available() -> bool:
    """True when mamba_ssm (CUDA kernels) can be imported and CUDA is present."""
    return torch.cuda.is_available() and importlib.util.find_spec("mamba_ssm") is not None


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
):
    """Selective scan on ``(batch, L, channels)`` tensors (``B, C: (batch, L, N)``).

    CUDA tensors go to mamba_ssm's kernel (its layout is channels-first, so they are
    transposed there) or, without mamba_ssm, to the reference recurrence; CPU tensors go to
    the numba scan, which works in this layout directly.
    """
    if not u.is_cuda:
        return selective_scan_cpu(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    if mamba_ssm_is_available():
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    else:
        selective_scan_fn = selective_scan_ref
    return scan_channels_first(
        selective_scan_fn, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
    )


def scan_channels_first(
    scan_fn, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
):  # fmt: skip
    """Run a scan of mamba_ssm's layout ((batch, channels, L)) on channels-last tensors."""
    out = scan_fn(
        u.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A,
        B.transpose(1, 2).contiguous(),
        C.transpose(1, 2).contiguous(),
        D,
        None if z is None else z.transpose(1, 2).contiguous(),
        delta_bias,
        delta_softplus,
        return_last_state,
    )
    if return_last_state:
        return out[0].transpose(1, 2), out[1]
    return out.transpose(1, 2)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal convolution along time, x: (batch, L, dim), weight: (dim, 1, K).

    Same parameters and result as ``nn.Conv1d(dim, dim, K, groups=dim, padding=K - 1)`` on
    the transposed input, cut to L steps, as K shifted multiply-adds in the layout of the
    linear layers (no transposes). The GPU path runs it; on CPU the fused numba kernel of
    :func:`conv_silu` replaces it, and it is that kernel's reference in the tests.
    """
    kernel = weight.shape[-1]
    length = x.shape[1]
    w = weight.reshape(weight.shape[0], kernel).t()  # (K, dim)
    padded = F.pad(x, (0, 0, kernel - 1, 0))
    out = padded[:, kernel - 1 :] * w[kernel - 1]
    for k in range(kernel - 1):
        out = torch.addcmul(out, padded[:, k : k + length], w[k])
    return out if bias is None else out + bias


def conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``silu(causal_conv1d(x))``: one fused numba kernel on CPU, PyTorch ops elsewhere."""
    if x.is_cuda:
        return F.silu(causal_conv1d(x, weight, bias))
    return causal_conv1d_silu(x, weight, bias)


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


class TimeEmbedding(nn.Module):
    """Learned sinusoid features of a scalar: sin(t * w + phi), w and phi learned per dim."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(size) * 0.1)
        self.phi = nn.Parameter(torch.randn(size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(t.float().unsqueeze(-1) * self.w + self.phi)


class EHRMambaEmbeddings(nn.Module):
    def __init__(self, config: EHRMambaConfig) -> None:
        super().__init__()
        h, te = config.hidden_size, config.time_embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.time_embeddings = TimeEmbedding(te)
        self.age_embeddings = TimeEmbedding(te)
        self.concat_projection = nn.Linear(h + 2 * te, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.visit_order_embeddings = nn.Embedding(config.max_visits, h)
        self.visit_segment_embeddings = nn.Embedding(config.visit_segments, h)
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.max_visits = config.max_visits

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        time_weeks: torch.Tensor | None = None,
        age_years: torch.Tensor | None = None,
        visit_order: torch.Tensor | None = None,
        visit_segment: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        zeros_long = torch.zeros_like(input_ids)
        zeros_float = torch.zeros(input_ids.shape, device=input_ids.device)
        token_type_ids = zeros_long if token_type_ids is None else token_type_ids
        time_weeks = zeros_float if time_weeks is None else time_weeks
        age_years = zeros_float if age_years is None else age_years
        visit_order = zeros_long if visit_order is None else visit_order
        visit_segment = zeros_long if visit_segment is None else visit_segment

        concept = self.word_embeddings(input_ids)
        x = torch.cat(
            [concept, self.time_embeddings(time_weeks), self.age_embeddings(age_years)], dim=-1
        )
        x = self.concat_projection(x)
        x = (
            x
            + self.token_type_embeddings(token_type_ids)
            + self.visit_order_embeddings(visit_order.clamp(0, self.max_visits - 1))
            + self.visit_segment_embeddings(visit_segment)
        )
        x = self.layer_norm(self.dropout(x))
        if attention_mask is not None:
            # padded positions carry no information, whatever token sits there
            x = x * attention_mask.unsqueeze(-1).to(x.dtype)
        return x


# --------------------------------------------------------------------------------------
# Mamba block (names and shapes as mamba_ssm.modules.mamba_simple.Mamba / Block)
# --------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(
            x.dtype
        ) * self.weight


class MambaMixer(nn.Module):
    def __init__(self, config: EHRMambaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d_model, d_inner = config.hidden_size, config.d_inner
        self.d_inner, self.d_state, self.d_conv = d_inner, config.state_size, config.conv_kernel
        self.dt_rank = config.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, config.conv_kernel, groups=d_inner, padding=config.conv_kernel - 1
        )
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # S4D-real initialization of A and the dt bias, as mamba_ssm
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        dt = torch.exp(
            torch.rand(d_inner) * (math.log(config.dt_max) - math.log(config.dt_min))
            + math.log(config.dt_min)
        ).clamp(min=config.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True

    def forward(self, hidden: torch.Tensor, cache=None) -> torch.Tensor:
        """hidden: (batch, L, d_model) -> (batch, L, d_model).

        With ``cache`` (this layer's ``(conv_state, ssm_state)``), the states after the last
        position are written into it, so :meth:`step_tokens` continues the sequence: one scan of a
        history serves any number of continuations. Sequences must not be right-padded then.
        """
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, L, d_inner) each
        if cache is not None:
            conv_state = cache[0]  # (b, d_inner, d_conv)
            keep = min(length, self.d_conv)
            conv_state.zero_()
            conv_state[:, :, self.d_conv - keep :] = (
                x[:, length - keep :].transpose(1, 2).to(conv_state.dtype)
            )
        x = conv_silu(x, self.conv1d.weight, self.conv1d.bias)
        x_dbl = self.x_proj(x)  # (b, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (b, L, d_inner); bias: in the scan
        A = -torch.exp(self.A_log.float())
        y = selective_scan(
            x,
            dt,
            A,
            B,
            C,
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=cache is not None,
        )
        if cache is not None:
            y, last_state = y
            cache[1].copy_(last_state)
        return self.out_proj(y.to(hidden.dtype))

    def allocate_inference_cache(self, batch: int, device=None, dtype=None):
        weight = self.conv1d.weight
        conv_state = torch.zeros(
            batch, self.d_inner, self.d_conv, device=device or weight.device, dtype=dtype
        )
        ssm_state = torch.zeros(
            batch, self.d_inner, self.d_state, device=device or weight.device, dtype=torch.float32
        )
        return conv_state, ssm_state

    def step_tokens(self, hidden: torch.Tensor, conv_state, ssm_state) -> torch.Tensor:
        """k tokens from the cached state (states updated in place), as k recurrent steps.

        hidden: (batch, k, d_model) -> (batch, k, d_model). The projections and the convolution
        run once over the k tokens; only the state recurrence goes token by token.
        """
        k = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, k, d_inner) each
        window = torch.cat([conv_state, x.transpose(1, 2).to(conv_state.dtype)], dim=-1)
        conv_state.copy_(window[:, :, -self.d_conv :])
        taps = window.unfold(-1, self.d_conv, 1)[:, :, 1:]  # (b, d_inner, k, d_conv)
        x = (taps * self.conv1d.weight.squeeze(1)[:, None, :]).sum(-1) + self.conv1d.bias[:, None]
        x = F.silu(x.transpose(1, 2))  # (b, k, d_inner)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight) + self.dt_proj.bias)
        dA = torch.exp(dt.unsqueeze(-1) * -torch.exp(self.A_log.float()))  # (b, k, d_inner, N)
        dBx = (dt * x).unsqueeze(-1) * B.unsqueeze(2)
        ys = []
        for j in range(k):
            ssm_state.copy_(ssm_state * dA[:, j] + dBx[:, j])
            ys.append((ssm_state * C[:, j].unsqueeze(1)).sum(-1))
        y = (torch.stack(ys, dim=1) + self.D * x) * F.silu(z)
        return self.out_proj(y)


class MambaBlock(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)) (mamba_ssm's Block, unfused)."""

    def __init__(self, config: EHRMambaConfig, layer_idx: int) -> None:
        super().__init__()
        norm_cls = RMSNorm if config.rms_norm else nn.LayerNorm
        self.norm = norm_cls(config.hidden_size, eps=config.norm_eps)
        self.mixer = MambaMixer(config, layer_idx)

    def forward(self, hidden: torch.Tensor, cache=None) -> torch.Tensor:
        return hidden + self.mixer(self.norm(hidden), cache)

    def step_tokens(self, hidden: torch.Tensor, conv_state, ssm_state) -> torch.Tensor:
        return hidden + self.mixer.step_tokens(self.norm(hidden), conv_state, ssm_state)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class EHRMambaPreTrainedModel(nn.Module):
    config: EHRMambaConfig

    def _init_weights(self, module: nn.Module) -> None:
        """mamba_ssm's scheme: N(0, 0.02) embeddings, zero Linear biases (except dt_proj),
        out_proj rescaled by 1/sqrt(n_layers) (prenorm residual, GPT-2 style)."""
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
            if getattr(module, "_is_out_proj", False):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                with torch.no_grad():
                    module.weight /= math.sqrt(self.config.num_hidden_layers)

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))
        save_model(self, str(directory / WEIGHTS_NAME))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu"):
        from safetensors.torch import load_model

        directory = Path(directory)
        config = EHRMambaConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        model = cls(config)
        load_model(model, str(directory / WEIGHTS_NAME), device=map_location)
        model.eval()
        return model


class EHRMambaModel(EHRMambaPreTrainedModel):
    """Backbone: embeddings -> Mamba blocks -> final norm. Returns (batch, L, hidden)."""

    def __init__(self, config: EHRMambaConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = EHRMambaEmbeddings(config)
        self.layers = nn.ModuleList(MambaBlock(config, i) for i in range(config.num_hidden_layers))
        norm_cls = RMSNorm if config.rms_norm else nn.LayerNorm
        self.norm_f = norm_cls(config.hidden_size, eps=config.norm_eps)
        for layer in self.layers:
            layer.mixer.out_proj._is_out_proj = True
        self.apply(self._init_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        time_weeks: torch.Tensor | None = None,
        age_years: torch.Tensor | None = None,
        visit_order: torch.Tensor | None = None,
        visit_segment: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """``cache`` (from :meth:`allocate_inference_cache`) receives the recurrent state after
        the last position: a prefill for :meth:`step`."""
        hidden = self.embeddings(
            input_ids,
            token_type_ids,
            time_weeks,
            age_years,
            visit_order,
            visit_segment,
            attention_mask,
        )
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, None if cache is None else cache[i])
        return self.norm_f(hidden)

    def allocate_inference_cache(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.mixer.allocate_inference_cache(batch) for layer in self.layers]

    def step(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        time_weeks: torch.Tensor | None = None,
        age_years: torch.Tensor | None = None,
        visit_order: torch.Tensor | None = None,
        visit_segment: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Advance one token per sequence. Inputs (batch,) or (batch, 1); returns (batch, H)."""
        features = (input_ids, token_type_ids, time_weeks, age_years, visit_order, visit_segment)
        return self.step_tokens(cache, *(None if t is None else t.reshape(-1, 1) for t in features))

    def step_tokens(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        time_weeks: torch.Tensor | None = None,
        age_years: torch.Tensor | None = None,
        visit_order: torch.Tensor | None = None,
        visit_segment: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Advance k tokens per sequence at once. Inputs (batch, k); returns the last token's
        hidden state (batch, H), as k calls of :meth:`step` would."""
        hidden = self.embeddings(
            input_ids, token_type_ids, time_weeks, age_years, visit_order, visit_segment
        )
        for layer, (conv_state, ssm_state) in zip(self.layers, cache, strict=True):
            hidden = layer.step_tokens(hidden, conv_state, ssm_state)
        return self.norm_f(hidden[:, -1])


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Hidden state of the last non-pad token of each sequence: (batch, L, H) -> (batch, H).

    Works for right or left padding (takes the highest position whose mask is 1).
    """
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask.long() * (positions + 1)).argmax(dim=-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Next-token labels: the input ids with padded positions set to -100."""
    labels = input_ids.clone()
    if attention_mask is not None:
        labels[attention_mask == 0] = IGNORE_INDEX
    return labels


@dataclass
class PretrainingOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: torch.Tensor


class EHRMambaForPretraining(EHRMambaPreTrainedModel):
    """Backbone + next-token LM head (tied to the concept embedding by default)."""

    def __init__(self, config: EHRMambaConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = EHRMambaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.backbone.embeddings.word_embeddings.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=config.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        time_weeks: torch.Tensor | None = None,
        age_years: torch.Tensor | None = None,
        visit_order: torch.Tensor | None = None,
        visit_segment: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> PretrainingOutput:
        hidden = self.backbone(
            input_ids,
            token_type_ids,
            time_weeks,
            age_years,
            visit_order,
            visit_segment,
            attention_mask,
        )
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
            # position t predicts token t + 1
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        return PretrainingOutput(loss=loss, logits=logits, hidden_states=hidden)

    def allocate_inference_cache(self, batch: int):
        return self.backbone.allocate_inference_cache(batch)

    def step(self, cache, input_ids, **inputs) -> torch.Tensor:
        """Logits (batch, vocab) for the next token after feeding one token per sequence."""
        return self.lm_head(self.backbone.step(cache, input_ids, **inputs))


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (batch,): one logit per (patient, task) sequence
    hidden_states: torch.Tensor


def repeat_cache(
    cache: list[tuple[torch.Tensor, torch.Tensor]], times: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A cache of batch ``b * times``: row ``i * times + j`` continues sequence ``i``."""
    return [
        (conv.repeat_interleave(times, 0), ssm.repeat_interleave(times, 0)) for conv, ssm in cache
    ]


class EHRMambaForMultitask(EHRMambaPreTrainedModel):
    """Backbone + one binary head shared by every task (multitask prompted finetuning).

    The task is named by its task token inside the sequence; the head reads the hidden state
    of the last real token. With the task token at the end, :meth:`predict_tasks` scans a
    history once and answers each task with one more recurrent step from the shared state.
    """

    def __init__(self, config: EHRMambaConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = EHRMambaModel(config)
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.hidden_size, 1)
        )
        nn.init.normal_(self.classifier[1].weight, std=config.initializer_range)
        nn.init.zeros_(self.classifier[1].bias)

    @classmethod
    def from_pretraining(cls, pretrained: EHRMambaForPretraining) -> EHRMambaForMultitask:
        """A classifier whose backbone starts from a pretrained model's weights."""
        model = cls(pretrained.config)
        model.backbone.load_state_dict(pretrained.backbone.state_dict())
        return model

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        time_weeks: torch.Tensor | None = None,
        age_years: torch.Tensor | None = None,
        visit_order: torch.Tensor | None = None,
        visit_segment: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pos_weight: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """``loss_weights`` (batch,) scales each row's loss before the mean, e.g. by its task."""
        hidden = self.backbone(
            input_ids,
            token_type_ids,
            time_weeks,
            age_years,
            visit_order,
            visit_segment,
            attention_mask,
        )
        logits = self.classifier(pool_last(hidden, attention_mask)).squeeze(-1)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), labels.float(), weight=loss_weights, pos_weight=pos_weight
            )
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden)

    @torch.no_grad()
    def predict_tasks(
        self, history: dict[str, torch.Tensor], task_inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Risk logits of one or more histories for several tasks from one shared scan.

        ``history``: features of shape (batch, L), no padding (equal lengths). ``task_inputs``:
        the task tokens' features, shape (batch, T) for T tasks, or (batch, T, k) when each task
        is prompted by k tokens. Returns logits (batch, T), equal to ``forward`` on each
        history with its task tokens appended.
        """
        if task_inputs["input_ids"].dim() == 2:
            task_inputs = {k: v.unsqueeze(-1) for k, v in task_inputs.items()}
        batch, n_tasks, repeats = task_inputs["input_ids"].shape
        cache = self.backbone.allocate_inference_cache(batch)
        self.backbone(**history, cache=cache)
        cache = repeat_cache(cache, n_tasks)
        prompt = {k: v.reshape(batch * n_tasks, repeats) for k, v in task_inputs.items()}
        hidden = self.backbone.step_tokens(cache, **prompt)
        return self.classifier(hidden).reshape(batch, n_tasks)

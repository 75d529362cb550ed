"""A compact torch Whisper, shaped for ONNX export and loaded from CTranslate2 weights.

Only the export step uses it (torch is not needed to serve). The graph is split the way the runtime decodes:

* ``WhisperEncoder``: log-mel -> cross-attention K/V for every decoder layer, so the decoder never recomputes
  them per token.
* ``WhisperDecoderStep``: a few tokens plus the self-attention cache -> last-position logits and the grown cache.

Keys are kept pre-transposed (``[..., head_dim, time]``) in both caches so each attention is a plain MatMul,
with no per-step Transpose of a 1500-frame tensor. The attention scale is folded into the query projection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from serving.build.ct2_weights import Ct2FormatError, Ct2Model
from serving.model_dir import WhisperDims

_LAYER_NORM_EPS = 1e-5
_GELU_EXACT = 3  # ctranslate2::ActivationType::GELU


def dims_of(model: Ct2Model) -> WhisperDims:
    """Hyper-parameters as the weights imply them; refuses specs this module does not implement."""
    if model.spec_name != "WhisperSpec":
        raise Ct2FormatError(f"model spec is {model.spec_name!r}; only 'WhisperSpec' can be exported")
    if model.scalar("decoder/activation") != _GELU_EXACT or not model.scalar("decoder/pre_norm"):
        raise Ct2FormatError("decoder must be pre-norm with exact GELU, as every released Whisper is")
    if model.scalar("encoder/num_heads") != model.scalar("decoder/num_heads"):
        raise Ct2FormatError("encoder and decoder head counts differ; Whisper uses one count for both")
    v = model.variables

    def layer_count(prefix: str) -> int:
        return len({m.group(1) for name in v if (m := re.match(rf"{prefix}/layer_(\d+)/", name))})

    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    return WhisperDims(
        n_mels=n_mels,
        n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
        d_model=d_model,
        n_heads=model.scalar("encoder/num_heads"),
        n_encoder_layers=layer_count("encoder"),
        n_decoder_layers=layer_count("decoder"),
        n_vocab=v["decoder/embeddings/weight"].shape[0],
    )


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, T, D] -> [B, H, T, D/H]."""
    b, t, d = x.shape
    return x.reshape(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, Dh] -> [B, T, H*Dh]."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


class _Mlp(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=_LAYER_NORM_EPS)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.n_heads = dims.n_heads
        self.norm = nn.LayerNorm(dims.d_model, eps=_LAYER_NORM_EPS)
        self.qkv = nn.Linear(dims.d_model, 3 * dims.d_model)
        self.out = nn.Linear(dims.d_model, dims.d_model)
        self.mlp = _Mlp(dims.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(t, self.n_heads) for t in self.qkv(self.norm(x)).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        return self.mlp(x + self.out(_merge(attn)))


class _DecoderLayer(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.n_heads = dims.n_heads
        self.self_norm = nn.LayerNorm(dims.d_model, eps=_LAYER_NORM_EPS)
        self.self_qkv = nn.Linear(dims.d_model, 3 * dims.d_model)
        self.self_out = nn.Linear(dims.d_model, dims.d_model)
        self.cross_norm = nn.LayerNorm(dims.d_model, eps=_LAYER_NORM_EPS)
        self.cross_q = nn.Linear(dims.d_model, dims.d_model)
        self.cross_kv = nn.Linear(dims.d_model, 2 * dims.d_model)  # run by the encoder, once per clip
        self.cross_out = nn.Linear(dims.d_model, dims.d_model)
        self.mlp = _Mlp(dims.d_model)

    def cross_cache(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = (_heads(t, self.n_heads) for t in self.cross_kv(audio).chunk(2, dim=-1))
        return k.transpose(-1, -2), v

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        cross_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = (_heads(t, self.n_heads) for t in self.self_qkv(self.self_norm(x)).chunk(3, dim=-1))
        k = torch.cat([past_k, k.transpose(-1, -2)], dim=-1)
        v = torch.cat([past_v, v], dim=-2)
        x = x + self.self_out(_merge(torch.softmax(q @ k + mask, dim=-1) @ v))
        # Rows are windows x beams, window-major, while the cross K/V hold one copy per window: each window's
        # beams are folded into the query axis, so the largest tensors of a step are read once per window.
        q = _heads(self.cross_q(self.cross_norm(x)), self.n_heads)
        rows, heads, steps, head_dim = q.shape
        windows = cross_k.shape[0]
        q = q.reshape(windows, -1, heads, steps, head_dim).transpose(1, 2).reshape(windows, heads, -1, head_dim)
        attn = torch.softmax(q @ cross_k + cross_mask, dim=-1) @ cross_v
        attn = attn.reshape(windows, heads, -1, steps, head_dim).transpose(1, 2).reshape(rows, heads, steps, head_dim)
        x = x + self.cross_out(_merge(attn))
        return self.mlp(x), k, v


class WhisperEncoder(nn.Module):
    """log-mel [B, n_mels, F] -> per decoder layer: cross_k [B, H, Dh, F/2], cross_v [B, H, F/2, Dh].

    Whisper always sees F = 3000 (30 s); a shorter even F (at most 3000) takes the first F/2 positional
    embeddings, which is how a quick draft of a few seconds of audio avoids encoding 30 s of padding. One tensor
    per layer, not one stacked tensor: the decoder would otherwise slice (copy) every layer's K/V
    out of the stack on every token.
    """

    positions: torch.Tensor  # a buffer, which nn.Module's attribute lookup would type as Tensor | Module

    def __init__(self, dims: WhisperDims, decoder_layers: nn.ModuleList) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dims.n_mels, dims.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dims.d_model, dims.d_model, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(dims.n_audio_ctx, dims.d_model))
        self.layers = nn.ModuleList(_EncoderLayer(dims) for _ in range(dims.n_encoder_layers))
        self.norm = nn.LayerNorm(dims.d_model, eps=_LAYER_NORM_EPS)
        self.decoder_layers = decoder_layers

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return tuple(t for layer in _decoder_layers(self.decoder_layers) for t in layer.cross_cache(x))


class WhisperDecoderStep(nn.Module):
    """One decoding step over ``tokens`` at positions ``offset..offset+T-1``, given the self-attention cache.

    Returns the logits of the last position only: the vocabulary projection is the largest matmul of a step and
    earlier positions' logits are never used. The tied embedding is stored transposed, [d_model, vocab], so the
    token lookup (a Gather on axis 1) and the logits MatMul share one initializer instead of shipping a
    constant-folded transposed copy of the largest tensor in the model.
    """

    positions: torch.Tensor  # a buffer, as in WhisperEncoder

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.vocab = nn.Parameter(torch.zeros(dims.d_model, dims.n_vocab))
        self.register_buffer("positions", torch.zeros(dims.n_text_ctx, dims.d_model))
        self.layers = nn.ModuleList(_DecoderLayer(dims) for _ in range(dims.n_decoder_layers))
        self.norm = nn.LayerNorm(dims.d_model, eps=_LAYER_NORM_EPS)

    def forward(
        self,
        tokens: torch.Tensor,
        offset: torch.Tensor,
        source: torch.Tensor,
        frames: torch.Tensor,
        *caches: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """``caches`` holds, per layer, past_k [B, H, Dh, P], past_v [B, H, P, Dh], cross_k [W, H, Dh, F] and
        cross_v [W, H, F, Dh]; the B rows are W windows times B/W beams, window-major. Row ``i`` continues the past
        of row ``source[i]`` (a beam search reorders its beams every step; a plain decode passes 0..B-1). Window
        ``w``'s audio is its first ``frames[w]`` of the F frames: windows encoded at different lengths (streaming
        drafts of several streams) share a step, each padded to F and attending to its own audio only.

        Returns logits [B, vocab] then, per layer, present_k [B, H, Dh, P+T] and present_v [B, H, P+T, Dh].
        """
        steps = torch.arange(tokens.shape[1], dtype=torch.int64)
        query_pos = offset + steps
        key_pos = torch.arange(caches[0].shape[-1] + tokens.shape[1], dtype=torch.int64)
        mask = torch.where(key_pos[None, :] > query_pos[:, None], float("-inf"), 0.0)
        audio_pos = torch.arange(caches[2].shape[-1], dtype=torch.int64)
        cross_mask = torch.where(audio_pos[None, :] < frames[:, None], 0.0, float("-inf"))[:, None, None, :]
        embedded = torch.index_select(self.vocab, 1, tokens.reshape(-1)).t().reshape(*tokens.shape, -1)
        x = embedded + F.embedding(query_pos, self.positions)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            past_k, past_v, cross_k, cross_v = caches[4 * i : 4 * i + 4]
            past_k, past_v = past_k.index_select(0, source), past_v.index_select(0, source)
            x, k, v = layer(x, mask, past_k, past_v, cross_k, cross_v, cross_mask)
            presents += [k, v]
        logits = self.norm(x[:, -1]) @ self.vocab
        return (logits, *presents)


def _decoder_layers(layers: nn.ModuleList) -> Iterable[_DecoderLayer]:
    # A ModuleList yields plain nn.Modules to a type checker; these hold only the layers they were built with.
    return cast("Iterable[_DecoderLayer]", layers)


def _encoder_layers(layers: nn.ModuleList) -> Iterable[_EncoderLayer]:
    return cast("Iterable[_EncoderLayer]", layers)


def _assign(param: torch.Tensor, value: np.ndarray, name: str) -> None:
    if tuple(param.shape) != value.shape:
        raise Ct2FormatError(f"{name} has shape {value.shape}; the model expects {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(torch.from_numpy(value.astype(np.float32)))


def _load_linear(linear: nn.Linear, model: Ct2Model, prefix: str, scale_rows: int = 0, scale: float = 1.0) -> None:
    """Copy ``prefix/{weight,bias}``; the first ``scale_rows`` outputs (the query) are multiplied by ``scale``."""
    weight = model.variables[f"{prefix}/weight"].astype(np.float32)
    bias = model.variables[f"{prefix}/bias"].astype(np.float32)
    weight[:scale_rows] *= scale
    bias[:scale_rows] *= scale
    _assign(linear.weight, weight, f"{prefix}/weight")
    _assign(linear.bias, bias, f"{prefix}/bias")


def _load_norm(norm: nn.LayerNorm, model: Ct2Model, prefix: str) -> None:
    _assign(norm.weight, model.variables[f"{prefix}/gamma"], f"{prefix}/gamma")
    _assign(norm.bias, model.variables[f"{prefix}/beta"], f"{prefix}/beta")


def _load_mlp(mlp: _Mlp, model: Ct2Model, prefix: str) -> None:
    _load_norm(mlp.norm, model, f"{prefix}/layer_norm")
    _load_linear(mlp.fc1, model, f"{prefix}/linear_0")
    _load_linear(mlp.fc2, model, f"{prefix}/linear_1")


def build_whisper(model: Ct2Model) -> tuple[WhisperEncoder, WhisperDecoderStep, WhisperDims]:
    """Encoder and decoder step in fp32 and eval mode, every parameter taken from ``model``."""
    dims = dims_of(model)
    scale = 1.0 / math.sqrt(dims.head_dim)
    decoder = WhisperDecoderStep(dims)
    encoder = WhisperEncoder(dims, decoder.layers)
    v = model.variables
    for conv, name in ((encoder.conv1, "conv1"), (encoder.conv2, "conv2")):
        _assign(conv.weight, v[f"encoder/{name}/weight"], f"encoder/{name}/weight")
        # Conv1d types .bias Optional (for bias=False); get_parameter returns a Parameter, or raises if there is none.
        _assign(conv.get_parameter("bias"), v[f"encoder/{name}/bias"], f"encoder/{name}/bias")
    _assign(encoder.positions, v["encoder/position_encodings/encodings"], "encoder/position_encodings")
    for i, layer in enumerate(_encoder_layers(encoder.layers)):
        prefix = f"encoder/layer_{i}"
        _load_norm(layer.norm, model, f"{prefix}/self_attention/layer_norm")
        _load_linear(layer.qkv, model, f"{prefix}/self_attention/linear_0", dims.d_model, scale)
        _load_linear(layer.out, model, f"{prefix}/self_attention/linear_1")
        _load_mlp(layer.mlp, model, f"{prefix}/ffn")
    _load_norm(encoder.norm, model, "encoder/layer_norm")
    _assign(decoder.vocab, np.ascontiguousarray(v["decoder/embeddings/weight"].T), "decoder/embeddings/weight")
    _assign(decoder.positions, v["decoder/position_encodings/encodings"], "decoder/position_encodings")
    for i, decoder_layer in enumerate(_decoder_layers(decoder.layers)):
        prefix = f"decoder/layer_{i}"
        _load_norm(decoder_layer.self_norm, model, f"{prefix}/self_attention/layer_norm")
        _load_linear(decoder_layer.self_qkv, model, f"{prefix}/self_attention/linear_0", dims.d_model, scale)
        _load_linear(decoder_layer.self_out, model, f"{prefix}/self_attention/linear_1")
        _load_norm(decoder_layer.cross_norm, model, f"{prefix}/attention/layer_norm")
        _load_linear(decoder_layer.cross_q, model, f"{prefix}/attention/linear_0", dims.d_model, scale)
        _load_linear(decoder_layer.cross_kv, model, f"{prefix}/attention/linear_1")
        _load_linear(decoder_layer.cross_out, model, f"{prefix}/attention/linear_2")
        _load_mlp(decoder_layer.mlp, model, f"{prefix}/ffn")
    _load_norm(decoder.norm, model, "decoder/layer_norm")
    return encoder.eval(), decoder.eval(), dims

"""DeepSpeech2 adapted to attribute classification (the target model T and every attacker).

Follows SeanNaren/deepspeech.pytorch ``deepspeech_pytorch/model.py`` (conv front, BatchRNN stack,
sequence-wise BatchNorm + bias-free Linear head) with the paper's sizes: 16 conv channels and
64 RNN hidden units. Only the head's output size changes with the task.

Shapes: ``B`` batch, ``F`` frequency bins (161), ``T`` input frames, ``T'`` output frames
(``conv_output_length(T)``), ``C`` conv channels, ``H`` hidden size, ``K`` classes.

The paper's "prediction per segment" is :meth:`DeepSpeech2Classifier.forward`: one logit vector per
input segment, the masked mean of the per-frame logits. The utterance's class is then decided by
:func:`vote` over its segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from optin.settings import StrictConfig

# (kernel, stride, padding) of the two conv layers, as (frequency, time) pairs. The module and the
# length functions below both read this, so output lengths are never copied arithmetic.
CONV_KERNELS: tuple[tuple[int, int], ...] = ((41, 11), (21, 11))
CONV_STRIDES: tuple[tuple[int, int], ...] = ((2, 2), (2, 1))
CONV_PADDINGS: tuple[tuple[int, int], ...] = ((20, 5), (10, 5))

RNN_TYPES: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class DeepSpeech2Config(StrictConfig):
    """Constructor arguments of :class:`DeepSpeech2Classifier`; stored in checkpoints.

    Attributes:
        n_classes: output classes K (2 for gender; the only size that changes with the task).
        n_freq: frequency bins of the input spectrogram (161 for a 320-point STFT).
        conv_channels: channels C of both conv layers (paper: 16; reference: 32).
        hidden_size: hidden units H of every RNN layer (paper: 64).
        rnn_layers: number of BatchRNN layers. **Choice**: 3; the paper does not say, the
            reference defaults to 5 with H = 1024, and 3 keeps the model small at H = 64.
        rnn_type: "gru" (reference v2.0) or "lstm" (later reference versions).
        bidirectional: bidirectional RNNs with the two directions summed (reference default).
            Unidirectional runs without the reference's Lookahead layer.
        dropout: dropout on each RNN layer's output (0 = none, as in the reference).
    """

    n_classes: int = 2
    n_freq: int = 161
    conv_channels: int = 16
    hidden_size: int = 64
    rnn_layers: int = 3
    rnn_type: Literal["gru", "lstm"] = "gru"
    bidirectional: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {sorted(RNN_TYPES)}, got {self.rnn_type!r}")
        for name in ("n_classes", "n_freq", "conv_channels", "hidden_size", "rnn_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _conv_length(length: Any, kernel: int, stride: int, padding: int) -> Any:
    """Output length of one conv axis (dilation 1); works on ints and integer tensors."""
    return (length + 2 * padding - kernel) // stride + 1


@overload
def conv_output_length(lengths: int) -> int: ...
@overload
def conv_output_length(lengths: Tensor) -> Tensor: ...
def conv_output_length(lengths: int | Tensor) -> int | Tensor:
    """Frames after the conv front for ``lengths`` input frames: ``(T - 1) // 2 + 1``.

    Args:
        lengths: an int or an integer tensor of any shape (e.g. ``(B,)``), each >= 0.

    Returns:
        the same type and shape; the time axis is halved (rounded up) by the first conv and kept
        by the second. The one function every caller uses for output lengths.
    """
    out = lengths
    for kernel, stride, padding in zip(CONV_KERNELS, CONV_STRIDES, CONV_PADDINGS, strict=True):
        out = _conv_length(out, kernel[1], stride[1], padding[1])
    return out


def conv_output_freq(n_freq: int) -> int:
    """Frequency bins after the conv front (161 -> 81 -> 41)."""
    out = n_freq
    for kernel, stride, padding in zip(CONV_KERNELS, CONV_STRIDES, CONV_PADDINGS, strict=True):
        out = _conv_length(out, kernel[0], stride[0], padding[0])
    return out


def frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B, max_len)`` bool, True on valid frames (index < length)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class MaskConv(nn.Module):
    """Conv front; zeroes padded frames before the first module and after every module.

    Zeroing after each module (not only at the end) is what keeps padding from leaking into
    valid frames: BatchNorm's shift makes padded frames nonzero, and the next conv would read them.
    The padded input is zeroed too, so callers need not pad with zeros.
    """

    def __init__(self, conv_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for kernel, stride, padding in zip(CONV_KERNELS, CONV_STRIDES, CONV_PADDINGS, strict=True):
            layers += [
                nn.Conv2d(in_ch, conv_channels, kernel, stride=stride, padding=padding),
                nn.BatchNorm2d(conv_channels),
                nn.Hardtanh(0.0, 20.0, inplace=True),
            ]
            in_ch = conv_channels
        self.seq_module = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Args: x ``(B, 1, F, T)``; lengths ``(B,)`` valid input frames.

        Returns ``(B, C, F', T')`` with frames ``>= conv_output_length(lengths)`` zero.
        """
        assert x.ndim == 4, f"expected (B, 1, F, T), got {tuple(x.shape)}"
        x = x.masked_fill(~frame_mask(lengths, x.size(-1))[:, None, None, :], 0.0)
        out_lengths = conv_output_length(lengths)
        for module in self.seq_module:
            x = module(x)
            # The second conv keeps the time axis, so after the first conv every module's
            # valid length is the final output length.
            valid = frame_mask(out_lengths, x.size(-1))  # (B, T')
            x = x.masked_fill(~valid[:, None, None, :], 0.0)
        return x


class SequenceWise(nn.Module):
    """Applies a per-frame module (BatchNorm1d, Linear, ...) to ``(B, T, D)`` input."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D')``."""
        assert x.ndim == 3, f"expected (B, T, D), got {tuple(x.shape)}"
        b, t = x.shape[:2]
        y = self.module(x.reshape(b * t, -1))  # (B*T, D')
        return y.reshape(b, t, -1)  # (B, T, D')


class BatchRNN(nn.Module):
    """Optional sequence-wise BatchNorm1d, then an RNN over the valid frames only.

    Bidirectional outputs are summed over the two directions, so the output size is H either way.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        rnn_type: str = "gru",
        bidirectional: bool = True,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.batch_norm = SequenceWise(nn.BatchNorm1d(input_size)) if batch_norm else None
        self.rnn = RNN_TYPES[rnn_type](
            input_size=input_size,
            hidden_size=hidden_size,
            bidirectional=bidirectional,
            bias=True,
            batch_first=True,
        )

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Args: x ``(B, T', D)``; lengths ``(B,)`` valid frames, each in ``[1, T']``.

        Returns ``(B, T', H)``, zero on padded frames.
        """
        assert x.ndim == 3, f"expected (B, T', D), got {tuple(x.shape)}"
        total = x.size(1)
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(out, batch_first=True, total_length=total)  # (B, T', dirs*H)
        if self.bidirectional:
            b, t = y.shape[:2]
            y = y.reshape(b, t, 2, self.hidden_size).sum(dim=2)  # (B, T', 2, H) -> (B, T', H)
        return y


class DeepSpeech2Classifier(nn.Module):
    """DeepSpeech2 with a classification head: one logit vector per input segment.

    conv front -> ``rnn_layers`` BatchRNNs -> sequence-wise BatchNorm1d -> Linear(H, K, bias=False)
    per frame -> masked mean over the valid output frames.

    **Choice** (pooling): the mean of the per-frame logits over valid frames. The reference is a
    per-frame (CTC) model; mean pooling is the simplest reading of "a prediction per segment" that
    keeps the head's layer list unchanged, and it is invariant to padding.
    """

    def __init__(self, config: DeepSpeech2Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DeepSpeech2Config()
        cfg = self.config
        self.conv = MaskConv(cfg.conv_channels)
        self.rnn_input_size = cfg.conv_channels * conv_output_freq(cfg.n_freq)
        self.rnns = nn.ModuleList(
            BatchRNN(
                input_size=self.rnn_input_size if i == 0 else cfg.hidden_size,
                hidden_size=cfg.hidden_size,
                rnn_type=cfg.rnn_type,
                bidirectional=cfg.bidirectional,
                batch_norm=i > 0,
            )
            for i in range(cfg.rnn_layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = SequenceWise(
            nn.Sequential(
                nn.BatchNorm1d(cfg.hidden_size),
                nn.Linear(cfg.hidden_size, cfg.n_classes, bias=False),
            )
        )

    def _lengths(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            return torch.full((x.size(0),), x.size(-1), dtype=torch.long, device=x.device)
        assert lengths.shape == (x.size(0),), (
            f"lengths must be (B,) = ({x.size(0)},), got {tuple(lengths.shape)}"
        )
        return lengths.to(device=x.device, dtype=torch.long)

    def frame_logits(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-frame logits.

        Args:
            x: ``(B, F, T)`` normalized log spectrogram, F = ``config.n_freq``.
            lengths: ``(B,)`` long, valid frames per item, each in ``[1, T]``; None = all T.

        Returns:
            logits ``(B, T', K)`` (zero on padded frames) and output lengths ``(B,)`` long.
        """
        assert x.ndim == 3, f"expected (B, F, T), got {tuple(x.shape)}"
        assert x.size(1) == self.config.n_freq, f"expected F={self.config.n_freq}, got {x.size(1)}"
        lengths = self._lengths(x, lengths)
        out_lengths = conv_output_length(lengths)
        h = self.conv(x.unsqueeze(1), lengths)  # (B, 1, F, T) -> (B, C, F', T')
        b, c, f, t = h.shape
        h = h.reshape(b, c * f, t).transpose(1, 2)  # (B, C*F', T') -> (B, T', C*F')
        for rnn in self.rnns:
            h = self.dropout(rnn(h, out_lengths))  # (B, T', H)
        logits = self.fc(h)  # (B, T', K)
        valid = frame_mask(out_lengths, t)  # (B, T')
        return logits.masked_fill(~valid[..., None], 0.0), out_lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """One prediction per segment.

        Args:
            x: ``(B, F, T)`` normalized log spectrogram.
            lengths: ``(B,)`` long valid frames, each in ``[1, T]``; None = all T.

        Returns:
            logits ``(B, K)``: mean of the frame logits over the ``conv_output_length(lengths)``
            valid frames.
        """
        assert x.ndim == 3, f"expected (B, F, T), got {tuple(x.shape)}"
        logits, out_lengths = self.frame_logits(x, lengths)  # (B, T', K), (B,)
        return logits.sum(dim=1) / out_lengths[:, None].to(logits.dtype)  # (B, K)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def utterance_posteriors(
    segment_logits: Tensor, utterance_index: Tensor, n_utterances: int
) -> Tensor:
    """Mean softmax posterior of each utterance's segments.

    Args:
        segment_logits: ``(S, K)`` one row per segment.
        utterance_index: ``(S,)`` long, the utterance (in ``[0, U)``) of each segment.
        n_utterances: U; every utterance must have at least one segment.

    Returns:
        ``(U, K)`` averaged posteriors.
    """
    sums, counts = _posterior_sums(segment_logits, utterance_index, n_utterances)
    return sums / counts[:, None]


def _posterior_sums(
    segment_logits: Tensor, utterance_index: Tensor, n_utterances: int
) -> tuple[Tensor, Tensor]:
    """Summed posteriors ``(U, K)`` and segment counts ``(U,)``; checks every U has a segment."""
    assert segment_logits.ndim == 2, f"expected (S, K), got {tuple(segment_logits.shape)}"
    assert utterance_index.shape == segment_logits.shape[:1], (
        f"utterance_index must be (S,), got {tuple(utterance_index.shape)}"
    )
    index = utterance_index.to(device=segment_logits.device, dtype=torch.long)
    if index.numel() and (index.min() < 0 or index.max() >= n_utterances):
        raise ValueError(f"utterance_index must be in [0, {n_utterances})")
    post = nnf.softmax(segment_logits.float(), dim=-1)  # (S, K)
    sums = post.new_zeros(n_utterances, post.size(1)).index_add_(0, index, post)  # (U, K)
    counts = torch.bincount(index, minlength=n_utterances)  # (U,)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"utterances without segments: {missing[:10]}")
    return sums, counts.to(post.dtype)


def vote(
    segment_logits: Tensor,
    utterance_index: Tensor,
    n_utterances: int,
    method: Literal["majority", "mean"] = "majority",
) -> Tensor:
    """Utterance class from its segments' predictions.

    Args:
        segment_logits: ``(S, K)`` one row per segment.
        utterance_index: ``(S,)`` long, the utterance (in ``[0, U)``) of each segment.
        n_utterances: U; every utterance must have at least one segment.
        method: "majority" counts each segment's argmax, ties broken by the summed posteriors
            (then by the lowest class index); "mean" takes the argmax of the mean posterior.

    Returns:
        ``(U,)`` long predicted class. Use :func:`utterance_posteriors` for the ``(U, K)``
        averaged posteriors.
    """
    sums, _ = _posterior_sums(segment_logits, utterance_index, n_utterances)  # (U, K)
    if method == "mean":
        return sums.argmax(dim=1)
    if method != "majority":
        raise ValueError(f"method must be 'majority' or 'mean', got {method!r}")
    index = utterance_index.to(device=segment_logits.device, dtype=torch.long)
    k = segment_logits.size(1)
    winners = segment_logits.argmax(dim=1)  # (S,)
    votes = torch.zeros(n_utterances * k, dtype=torch.long, device=segment_logits.device)
    votes = votes.index_add_(0, index * k + winners, torch.ones_like(winners))
    votes = votes.view(n_utterances, k)  # (U*K,) -> (U, K)
    tied = votes == votes.max(dim=1, keepdim=True).values  # (U, K)
    return sums.masked_fill(~tied, float("-inf")).argmax(dim=1)

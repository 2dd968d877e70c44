"""Recurrent operators: LSTM (gates iofc, optional peepholes, clip) and GRU (gates zrh,
``linear_before_reset``), forward / reverse / bidirectional, layouts 0 and 1, optional initial
states; explicit loops over time (exact and differentiable), default activations only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optin.models.onnx_ops.core import Node, OpFn, UnsupportedOnnxModel, Value


def _rnn_inputs(node: Node, ins: list[Value], gates: int
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int, bool]:
    """X as (seq, batch, input), W, R, B, and the checks shared by LSTM and GRU."""
    x, w, r = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    seq_lens = ins[4] if len(ins) > 4 else None
    layout = node.attrs.get("layout", 0)
    if layout:
        x = x.transpose(0, 1)
    if seq_lens is not None and bool((seq_lens != x.shape[0]).any()):
        raise UnsupportedOnnxModel(f"{node.op_type} {node.name!r}: ragged sequence_lens")
    hidden = r.shape[-1]
    if b is None:
        b = torch.zeros(w.shape[0], 2 * gates * hidden, dtype=x.dtype, device=x.device)
    return x, w, r, b, hidden, bool(layout)


def _directions(node: Node) -> list[bool]:
    """One flag per direction: True when it runs backwards in time."""
    d = node.attrs.get("direction", "forward")
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[d]


def _initial(ins: list[Value], pos: int, layout: bool, shape: tuple[int, ...],
             like: Tensor) -> Tensor:
    h = ins[pos] if len(ins) > pos else None
    if h is None:
        return like.new_zeros(shape)
    return h.transpose(0, 1) if layout else h


def _rnn_outputs(ys: list[Tensor], finals: list[list[Tensor]], layout: bool
                 ) -> tuple[Tensor, ...]:
    """Y (seq, num_dir, batch, hidden) and the final states (num_dir, batch, hidden)."""
    y = torch.stack(ys, dim=1)
    states = [torch.stack(f, dim=0) for f in finals]
    if layout:
        y = y.permute(2, 0, 1, 3)
        states = [s.transpose(0, 1) for s in states]
    return (y, *states)


def _lstm(node: Node, ins: list[Value]) -> tuple[Tensor, ...]:
    x, w, r, b, hid, layout = _rnn_inputs(node, ins, 4)
    seq, batch = x.shape[0], x.shape[1]
    clip = node.attrs.get("clip")
    p = ins[7] if len(ins) > 7 else None
    h0 = _initial(ins, 5, layout, (w.shape[0], batch, hid), x)
    c0 = _initial(ins, 6, layout, (w.shape[0], batch, hid), x)
    ys, hs, cs = [], [], []
    for d, backwards in enumerate(_directions(node)):
        xw = x @ w[d].t() + b[d, : 4 * hid] + b[d, 4 * hid :]  # (seq, batch, 4H)
        h, c = h0[d], c0[d]
        pi, po, pf = (p[d].chunk(3) if p is not None else (None, None, None))
        out: list[Tensor] = [x.new_empty(0)] * seq
        for t in (range(seq - 1, -1, -1) if backwards else range(seq)):
            g = xw[t] + h @ r[d].t()
            if clip is not None:
                g = g.clamp(-clip, clip)
            gi, go, gf, gc = g.chunk(4, dim=-1)
            if pi is not None:
                gi, gf = gi + pi * c, gf + pf * c
            c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gc)
            if po is not None:
                go = go + po * c
            h = torch.sigmoid(go) * torch.tanh(c)
            out[t] = h
        ys.append(torch.stack(out) if seq else x.new_zeros(0, batch, hid))
        hs.append(h)
        cs.append(c)
    return _rnn_outputs(ys, [hs, cs], layout)


def _gru(node: Node, ins: list[Value]) -> tuple[Tensor, ...]:
    x, w, r, b, hid, layout = _rnn_inputs(node, ins, 3)
    seq, batch = x.shape[0], x.shape[1]
    clip = node.attrs.get("clip")
    before = bool(node.attrs.get("linear_before_reset", 0))
    h0 = _initial(ins, 5, layout, (w.shape[0], batch, hid), x)
    ys, hs = [], []
    for d, backwards in enumerate(_directions(node)):
        wb, rb = b[d, : 3 * hid], b[d, 3 * hid :]
        xw = x @ w[d].t() + wb  # (seq, batch, 3H)
        rz, rr, rh = r[d].chunk(3, dim=0)
        rbz, rbr, rbh = rb.chunk(3)
        h = h0[d]
        out: list[Tensor] = [x.new_empty(0)] * seq
        for t in (range(seq - 1, -1, -1) if backwards else range(seq)):
            xz, xr, xh = xw[t].chunk(3, dim=-1)
            gz = xz + h @ rz.t() + rbz
            gr = xr + h @ rr.t() + rbr
            if clip is not None:
                gz, gr = gz.clamp(-clip, clip), gr.clamp(-clip, clip)
            z, rg = torch.sigmoid(gz), torch.sigmoid(gr)
            gh = xh + (rg * (h @ rh.t() + rbh) if before else (rg * h) @ rh.t() + rbh)
            if clip is not None:
                gh = gh.clamp(-clip, clip)
            h = (1 - z) * torch.tanh(gh) + z * h
            out[t] = h
        ys.append(torch.stack(out) if seq else x.new_zeros(0, batch, hid))
        hs.append(h)
    return _rnn_outputs(ys, [hs], layout)


RECURRENT_OPS: dict[str, OpFn] = {
    "LSTM": _lstm,
    "GRU": _gru,
}

"""Block planning for a windowed stream: which frames each network run makes final, and which
window of frames it reads (:class:`~optin.deploy.streaming.StreamingObfuscator`, rule 1).

A block makes ``chunk_frames`` frames final and runs when ``lookahead_frames`` more have
arrived; its window has a fixed length ``window_frames`` (left context + chunk + lookahead),
ends at the lookahead's end (rounded up to the stride grid) and is shorter only at the start of
a stream. All three lengths are multiples of :data:`DOWNSAMPLE_FACTOR` frames, so that window
starts fall on the offline network's stride grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optin.deploy.budgets import check_chunk_ms, check_window_ms
from optin.deploy.receptive_field import ReceptiveField
from optin.errors import ConfigError
from optin.models.cyclegan_vc2 import DOWNSAMPLE_FACTOR


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Block:
    """One network run: output frames ``[start, stop)`` from window ``[window_start, window_stop)``.

    With running statistics the block is normalised by all frames in ``[0, window_stop)``.
    """

    start: int
    stop: int
    window_start: int
    window_stop: int

    @property
    def window_frames(self) -> int:
        return self.window_stop - self.window_start


@dataclass(frozen=True)
class BlockPlanner:
    """The geometry of a stream's network runs, in frames.

    Attributes:
        chunk_frames: frames made final per run.
        lookahead_frames: future frames a run waits for.
        window_frames: frames a full-length window holds.
    """

    chunk_frames: int
    lookahead_frames: int
    window_frames: int

    @classmethod
    def for_network(cls, rf: ReceptiveField, hop_ms: float, chunk_ms: float,
                    window_ms: float | None = None,
                    lookahead_ms: float | None = None,
                    bytes_per_frame: int = 1) -> BlockPlanner:
        """The least geometry that covers the receptive field ``rf`` with chunks of
        ``chunk_ms`` (whole 4-frame steps); ``window_ms`` may ask for more, in whole steps,
        within the stream's memory budget at ``bytes_per_frame``
        (:mod:`optin.deploy.budgets`: anything else is refused, not rounded); ``lookahead_ms``
        may ask for more (rounded up to 4 frames; below ``rf.right`` it is refused)."""
        q = DOWNSAMPLE_FACTOR
        chunk = q * check_chunk_ms(chunk_ms, q * hop_ms, "the paper's obfuscator")
        lookahead = round_up(rf.right, q)
        if lookahead_ms is not None:
            wanted = math.ceil(lookahead_ms / hop_ms - 1e-9)
            if wanted < rf.right:
                raise ConfigError(
                    f"lookahead_ms={lookahead_ms} is shorter than the network's receptive "
                    f"field ({rf.right} frames = {rf.right * hop_ms:g} ms ahead)")
            lookahead = round_up(wanted, q)
        window = round_up(rf.left, q) + chunk + lookahead
        if window_ms is not None:
            window = check_window_ms(window_ms, window, hop_ms, bytes_per_frame)
        return cls(chunk, lookahead, window)

    @property
    def left_context_frames(self) -> int:
        """Frames of history before a chunk in a full-length window."""
        return self.window_frames - self.chunk_frames - self.lookahead_frames

    def block(self, start: int, total_frames: int | None = None) -> Block:
        """The window of the block starting at frame ``start`` (a multiple of the chunk).

        ``total_frames`` is the stream's length once known (at flush); before that the block
        runs when its lookahead has arrived.
        """
        stop = start + self.chunk_frames
        end = stop + self.lookahead_frames
        if total_frames is not None:
            stop, end = min(stop, total_frames), min(end, total_frames)
        window_start = max(0, round_up(end, DOWNSAMPLE_FACTOR) - self.window_frames)
        return Block(start, stop, window_start, end)

    def plan(self, total_frames: int) -> list[Block]:
        """Every block of a stream of ``total_frames`` frames, in order."""
        return [self.block(b, total_frames) for b in range(0, total_frames, self.chunk_frames)]

    def ready(self, start: int, frames: int) -> bool:
        """Whether the block starting at ``start`` can run with ``frames`` frames computed."""
        return start + self.chunk_frames + self.lookahead_frames <= frames

    def first_needed(self, next_start: int) -> int:
        """The first frame a window of the block at ``next_start`` or later can read."""
        return max(0, next_start + DOWNSAMPLE_FACTOR - self.window_frames)

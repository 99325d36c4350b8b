"""The line-buffer schedule of a sliding-window stage (kernels/window.cl): convolution with weights on
chip, pooling, LRN within a channel.

A stage reads its input rows into a line buffer and walks the output row by row.  Per image: a
prologue reads the rows the first output row needs; then each output row is one phase of
``row_iters`` iterations in which the row is computed (``steps_per_pixel`` steps per output pixel)
while the rows the next output row needs are read (one word per iteration).  Every number here is
written into the kernel as a constant, and the kernel's loop runs exactly ``image_iters`` times per
image -- so the cycles this module predicts are the iterations the kernel counts.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowGeometry:
    height: int            # input rows
    width: int             # input pixels per row
    words_per_pixel: int   # input words per pixel (channels padded to the stream width, / width)
    out_height: int
    out_width: int
    window_rows: int       # rows one window spans: (KH - 1) * DH + 1
    stride: int            # vertical stride
    pad: int               # top padding


@dataclass(frozen=True)
class WindowSchedule:
    line_rows: int         # rows the line buffer holds (LB_ROWS)
    first_rows: int        # rows the prologue reads
    first_iters: int       # prologue iterations (at least 1)
    row_steps: int         # compute steps per output row
    row_iters: int         # iterations per output-row phase: the larger of computing and reading
    emit_tail: int         # iterations after the last row for the last outputs to leave
    image_iters: int       # iterations per image
    next_need: int         # rows output row 1 needs (the kernel adds the stride per row)
    slot_init: int         # line-buffer slot of row -pad (the first window's top), mod line_rows
    slot_step: int         # stride mod line_rows
    reads: tuple           # input rows read in each output-row phase (for the pipeline model)


def rows_needed(geometry: WindowGeometry, out_row: int) -> int:
    """Rows of the input that output row `out_row` needs read (its window's last row + 1), unclamped."""
    return out_row * geometry.stride - geometry.pad + geometry.window_rows


def window_schedule(geometry: WindowGeometry, steps_per_pixel: int, emit_len: int) -> WindowSchedule:
    """The schedule of one image.

    emit_len: iterations an output needs after the step that finishes it (0: written at once; a
    convolution writes a finished word in the next iteration, or over CO / WOUT iterations).

      first_rows  = clamp(rows_needed(0), 0, H)
      reads[y]    = rows output row y+1 needs that are not read yet (the last row: all that remain)
      line_rows   = max over rows y of (rows read by the end of phase y) - (first row y's window needs)
      row_iters   = max(OW * steps_per_pixel, max(reads) * W * words_per_pixel, 1)
      image_iters = max(1, first_rows * W * words_per_pixel) + OH * row_iters
                    + max(0, OW * steps_per_pixel + emit_len - row_iters)
    """
    g = geometry
    row_words = g.width * g.words_per_pixel
    first_rows = min(max(rows_needed(g, 0), 0), g.height)
    done, reads, line_rows = first_rows, [], max(first_rows, 1)
    for y in range(g.out_height):
        target = min(max(rows_needed(g, y + 1), done), g.height) if y < g.out_height - 1 else g.height
        reads.append(target - done)
        line_rows = max(line_rows, target - max(0, y * g.stride - g.pad))
        done = target
    row_steps = g.out_width * steps_per_pixel
    row_iters = max(row_steps, max(reads, default=0) * row_words, 1)
    first_iters = max(1, first_rows * row_words)
    emit_tail = max(0, row_steps + emit_len - row_iters)
    return WindowSchedule(
        line_rows=line_rows, first_rows=first_rows, first_iters=first_iters, row_steps=row_steps,
        row_iters=row_iters, emit_tail=emit_tail,
        image_iters=first_iters + g.out_height * row_iters + emit_tail,
        next_need=rows_needed(g, 1), slot_init=(-g.pad) % line_rows, slot_step=g.stride % line_rows,
        reads=tuple(reads))

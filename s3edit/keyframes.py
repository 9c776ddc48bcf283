"""Keyframes: run the model on some frames and carry its crop-space edit to those between.

After alignment a face hardly moves in crop space (on the dev clips the landmarks move 0.4% of
the crop over 4 frames at the 95th percentile, a third of a pixel at 64 px), and the edit is
one code change for the whole clip. So the change the model makes to the aligned crop (the
edit's delta) is nearly the same on neighbouring frames. Linear interpolation of the delta
between keyframes 4 apart stays within 41-46 dB of the full computation on eyeglasses edits,
an error smaller than the full computation's own change from one frame to the next; warping
the delta by the landmark motion measured no better. Measurements: bench/README.md.
"""

from __future__ import annotations

import numpy as np

# A frame becomes a keyframe once the landmarks have moved this far (mean absolute offset, in
# crop widths) since the last one, whatever `every` says: a fast turn or a wide-open mouth
# gets its own model pass instead of an interpolated one.
MAX_MOTION = 0.02


def select_keyframes(valid: np.ndarray, landmarks: np.ndarray, every: int,
                     max_motion: float = MAX_MOTION) -> np.ndarray:
    """Bool (T,) mask of the frames the model runs on.

    valid: (T,) bool, frames with a tracked face; landmarks: (T, K, 2) in crop units (0..1),
    only read where valid. Within each run of tracked frames the first and the last are
    keyframes, so every frame lies between two keyframes of its own run; between them, every
    `every`-th frame, and any frame whose landmarks moved more than `max_motion` since the
    last keyframe. `every` = 1 makes every tracked frame a keyframe (the full computation).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    keys = np.zeros(len(valid), bool)
    last = -1  # the last keyframe of the current run, or -1 outside a run
    for t in range(len(valid)):
        if not valid[t]:
            if last >= 0 and not keys[t - 1]:
                keys[t - 1] = True  # close the run that just ended
            last = -1
            continue
        moved = last >= 0 and np.abs(landmarks[t] - landmarks[last]).mean() > max_motion
        if last < 0 or t - last >= every or moved:
            keys[t] = True
            last = t
    if len(valid) and valid[-1]:
        keys[-1] = True
    return keys


def interpolated_delta(t: int, left: tuple[int, np.ndarray], right: tuple[int, np.ndarray]
                       ) -> np.ndarray:
    """The delta at frame t from those of the keyframes around it, (frame, delta) each."""
    (a, delta_a), (b, delta_b) = left, right
    w = (t - a) / (b - a) if b != a else 0.0
    return (1 - w) * delta_a + w * delta_b

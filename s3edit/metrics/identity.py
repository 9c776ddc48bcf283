"""Identity metrics: how much an edit keeps who the person is, frame by frame and over time.

Faces are tracked as `s3edit apply` tracks them and embedded with the same frozen dlib encoder.
Identity preservation compares each edited frame with the same original frame. TL-ID and TG-ID
(STIT, Tzaban et al. 2022) compare the edited clip with itself over time, relative to the
original: with S and S' the frame-to-frame cosine similarity matrices of the original and edited
clips and R = S' / S, TL-ID is the mean of R over neighbouring frames and TG-ID over all pairs.
1.0 means the edit is as consistent over time as the source; lower means the identity flickers.
"""

from __future__ import annotations

import numpy as np

from s3edit.errors import UsageError
from s3edit.face.identity import EMBED_DIM, IdentityEncoder
from s3edit.face.landmarks import FaceDetector, landmarks68
from s3edit.face.track import FaceTrack, FaceTracker
from s3edit.progress import ProgressHook, no_progress
from s3edit.video import VideoInfo, read_frames


def track_face(info: VideoInfo, face_index: int | None = None,
               progress: ProgressHook = no_progress, stage: str = "tracking face") -> FaceTrack:
    """Track one face through the clip with the detector, tracker and smoothing of the pipeline."""
    tracker = FaceTracker(face_index=face_index)
    advance = progress(stage, info.frame_count)
    with FaceDetector(video=True) as detect:
        for frame in read_frames(info):
            tracker.update(detect(frame))
            advance(1)
    return tracker.finish()


def sampled(frames: int, every: int) -> np.ndarray:
    """Indices of the frames a metric looks at: every `every`-th, from the first."""
    if every < 1:
        raise UsageError(f"every must be 1 or more, got {every}")
    return np.arange(0, frames, every)


def embed_tracked(encoder: IdentityEncoder, frame: np.ndarray, track: FaceTrack, t: int
                  ) -> np.ndarray:
    """(128,) embedding of the tracked face on frame t; NaN where the track has no face."""
    if t >= track.frames or not track.valid[t]:
        return np.full(EMBED_DIM, np.nan, np.float32)
    return encoder([frame], [landmarks68(track.mesh[t])])[0]


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) cosine similarities between the rows of a and b (NaN rows give NaN)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def identity_similarity(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """(K,) cosine similarity of each edited frame's embedding with the same original frame."""
    n = min(len(original), len(edited))
    a, b = original[:n].astype(np.float64), edited[:n].astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def temporal_identity(original: np.ndarray, edited: np.ndarray) -> tuple[float, float]:
    """(TL-ID, TG-ID) of the edited embeddings relative to the original ones, (K, 128) each.

    Rows are the sampled frames, so with every N-th frame embedded TL-ID compares frames N
    apart. Frames where either clip has no face are left out; NaN when fewer than two remain.
    """
    n = min(len(original), len(edited))
    a, b = original[:n].astype(np.float64), edited[:n].astype(np.float64)
    keep = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    # Neighbours are neighbours among the kept frames: a gap without a face is skipped over.
    ratio = cosine_matrix(b[keep], b[keep]) / cosine_matrix(a[keep], a[keep])
    local = float(np.mean(np.diagonal(ratio, offset=1)))
    off_diagonal = ~np.eye(len(ratio), dtype=bool)
    return local, float(np.mean(ratio[off_diagonal]))

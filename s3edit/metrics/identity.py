"""Identity metrics: how much an edit keeps who the person is, frame by frame and over time.

Faces are tracked as `s3edit apply` tracks them and embedded with the same frozen dlib encoder.
Identity preservation compares each edited frame with the same original frame. TL-ID and TG-ID
(STIT, Tzaban et al. 2022) compare the edited clip with itself over time, relative to the
original: with S and S' the frame-to-frame cosine similarity matrices of the original and edited
clips and R = S' / S, TL-ID is the mean of R over neighbouring frames and TG-ID over all pairs.
1.0 means the edit is as consistent over time as the source; lower means the identity flickers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3edit.errors import UsageError
from s3edit.face.identity import EMBED_DIM, IdentityEncoder
from s3edit.face.landmarks import FaceDetector, landmarks68
from s3edit.face.track import FaceTrack, FaceTracker
from s3edit.video import VideoInfo, probe, read_frames

# Stage name, total units -> a function that advances that stage by n units (as the pipeline's).
ProgressHook = Callable[[str, int], Callable[[int], None]]


def no_progress(stage: str, total: int) -> Callable[[int], None]:
    return lambda n: None


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


@dataclass
class ClipIdentity:
    """Embeddings of the sampled frames of a clip; rows are NaN where no face was tracked."""

    indices: np.ndarray  # (K,) frame indices
    embeddings: np.ndarray  # (K, 128) float32


def clip_identity(path: Path, every: int = 1, face_index: int | None = None,
                  encoder: IdentityEncoder | None = None,
                  progress: ProgressHook = no_progress) -> ClipIdentity:
    """Track the face through a clip, then embed every `every`-th frame."""
    info = probe(path)
    track = track_face(info, face_index, progress)
    encoder = encoder or IdentityEncoder()
    indices = sampled(info.frame_count, every)
    embeddings = np.full((len(indices), EMBED_DIM), np.nan, np.float32)
    advance = progress("embedding identity", len(indices))
    for t, frame in enumerate(read_frames(info)):
        if t % every == 0 and t // every < len(indices):
            embeddings[t // every] = embed_tracked(encoder, frame, track, t)
            advance(1)
    return ClipIdentity(indices=indices, embeddings=embeddings)


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

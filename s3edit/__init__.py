"""s3edit: edit face attributes in videos, keeping identity, motion and the rest of the frame."""

import os

# torch's OpenMP threads spin while waiting by default; next to ffmpeg, mediapipe, dlib or any
# other job that burns the cores they need (measured on 2 cores beside a training run: 64 s
# against 8.9 s to invert 8 crops). Sleeping waits cost 1.5x on an idle machine at a batch of
# 8 crops, little at 32, hence apply's large batches. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

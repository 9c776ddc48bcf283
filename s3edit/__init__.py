"""s3edit: edit face attributes in videos, keeping identity, motion and the rest of the frame."""

import os

# torch's OpenMP threads spin while waiting by default; next to ffmpeg, mediapipe and dlib that
# burns the cores they need (measured: a UNet pass 6x slower on 2 busy cores). Sleeping waits
# cost nothing when the machine is idle. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

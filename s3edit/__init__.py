"""s3edit: edit face attributes in videos, keeping identity, motion and the rest of the frame."""

__version__ = "0.1.0"

"""Video input/output: probe a file, stream its frames, encode edited frames back."""

from s3edit.video.probe import VideoInfo, has_audio_stream, probe
from s3edit.video.reader import read_frames
from s3edit.video.writer import VideoWriter

__all__ = ["VideoInfo", "VideoWriter", "has_audio_stream", "probe", "read_frames"]

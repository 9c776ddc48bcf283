"""Video input/output: probe a file, stream its frames, encode edited frames back."""

from s3edit.video.info import VideoInfo
from s3edit.video.probe import has_audio_stream, probe
from s3edit.video.reader import read_frames
from s3edit.video.writer import VideoWriter

# File name endings taken for videos when a folder is given.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoWriter", "has_audio_stream", "probe", "read_frames"]

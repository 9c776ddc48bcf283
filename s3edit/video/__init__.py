"""Video input/output: probe a file, stream its frames, encode edited frames back."""

from s3edit.video.info import VideoInfo
from s3edit.video.probe import has_audio_stream, probe
from s3edit.video.reader import read_frames
from s3edit.video.writer import VIDEO_SUFFIXES, VideoWriter, check_video_name

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoWriter", "check_video_name", "has_audio_stream",
           "probe", "read_frames"]

import numpy as np
import pytest

from s3edit.keyframes import interpolated_delta, select_keyframes


def still(frames: int) -> np.ndarray:
    return np.zeros((frames, 68, 2))


def test_every_kth_frame_and_the_ends_of_each_run_are_keyframes():
    valid = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1], bool)
    keys = select_keyframes(valid, still(len(valid)), every=3)
    # run 0-6: 0, 3, 6 (its last); run 9-11: 9 and its last, 11
    assert np.flatnonzero(keys).tolist() == [0, 3, 6, 9, 11]
    assert not keys[~valid].any()


def test_every_one_is_the_full_computation():
    valid = np.array([0, 1, 1, 0, 1], bool)
    assert (select_keyframes(valid, still(5), every=1) == valid).all()


def test_a_run_ending_between_keyframes_gets_its_last_frame():
    valid = np.array([1, 1, 1, 1, 1, 0], bool)
    assert np.flatnonzero(select_keyframes(valid, still(6), every=4)).tolist() == [0, 4]
    valid = np.array([1, 1, 1, 0, 1], bool)
    assert np.flatnonzero(select_keyframes(valid, still(5), every=4)).tolist() == [0, 2, 4]


def test_fast_motion_adds_keyframes():
    valid = np.ones(9, bool)
    landmarks = still(9)
    landmarks[5:] += 0.05  # the face jumps by 5% of the crop at frame 5
    keys = select_keyframes(valid, landmarks, every=8)
    assert np.flatnonzero(keys).tolist() == [0, 5, 8]


def test_every_must_be_positive():
    with pytest.raises(ValueError):
        select_keyframes(np.ones(3, bool), still(3), every=0)


def test_delta_is_interpolated_linearly_between_keyframes():
    a, b = np.zeros((2, 2, 3)), np.full((2, 2, 3), 8.0)
    np.testing.assert_allclose(interpolated_delta(5, (4, a), (8, b)), 2.0)
    np.testing.assert_allclose(interpolated_delta(4, (4, a), (4, a)), 0.0)

"""Trajectory data: the HDF5 format, writer, readers (ours, Minari, robomimic, LeRobot), recorder, clip datasets."""

from worldsim.data.reader import TrajectoryReader
from worldsim.data.writer import TrajectoryWriter

__all__ = ["TrajectoryReader", "TrajectoryWriter"]

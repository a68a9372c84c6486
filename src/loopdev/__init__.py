"""loopdev: Linux loop devices that stay correct under asynchronous teardown."""

__version__ = "0.1.0"

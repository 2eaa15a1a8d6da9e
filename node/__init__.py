"""speaker-node: the daemon that runs on each commune loudspeaker cluster."""

__version__ = "0.1.0"

"""kgbackup: logical backup and restore of the Knowledge Graph Agent's stateful stores."""

__version__ = "0.1.0"

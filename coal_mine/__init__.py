"""Coal Mine: a periodic task monitor (canaries, deadlines, email alerts)."""

__version__ = "0.8.0"

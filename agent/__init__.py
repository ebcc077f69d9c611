"""goodhart-agent: alarms when an AI system's proxy metrics stop tracking its audited quality."""

__version__ = "0.1.0"

"""The per-invocation runtime contract shared by every executor."""

"""Sluice: serverless AI inference and pipelines, wire-compatible with OSCAR."""

__version__ = "0.1.0"

"""Monitored income-classifier serving on Seldon Core v2 and KServe."""

__version__ = "0.1.0"

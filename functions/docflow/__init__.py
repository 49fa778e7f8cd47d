"""Docflow: document classification — validate, extract text, classify."""

__version__ = "0.1.0"

"""Readers of a run directory: the live monitor and the HTML reports."""

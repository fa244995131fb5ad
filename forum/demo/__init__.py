"""Demo data: a realistic, backdated forum loaded from ``sample.json`` (see :mod:`forum.demo.loader`)."""

from forum.demo.loader import DEFAULT_SAMPLE_PATH, DemoSummary, load_demo, read_sample

__all__ = ["DEFAULT_SAMPLE_PATH", "DemoSummary", "load_demo", "read_sample"]

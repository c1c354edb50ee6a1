"""What people look at: timeline pictures, the offline viewer page and ``make run``'s summary.
Imports :mod:`pipeline.core` only; see ``docs/architecture.md``.
"""

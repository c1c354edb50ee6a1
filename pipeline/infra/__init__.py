"""How the stages run: Beam (and its Dask runner), the decoder sandbox, MLflow tracking and the
quieting of library logs. Imports :mod:`pipeline.core` only; see ``docs/architecture.md``.
"""

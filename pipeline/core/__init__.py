"""The contracts every stage shares: the config, the files between stages (manifest, shards,
annotations, timelines, the trained model's card), the frame reader, atomic writes and errors.

Nothing here imports another layer of the package; see ``docs/architecture.md``.
"""

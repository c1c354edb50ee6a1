"""Stage ``decode``: trailers -> channels_first uint8 ``.npy`` shards and the manifest.

``run`` (the stage: what to decode, Beam, manifest and report), ``plan`` (which trailers and
parts are left to decode), ``worker`` (decodes one part, inside a sandboxed decoder process),
``receipts`` (what is already done). Kept free of imports: the decoder processes import
``pipeline.decode.worker`` and must not pay for Beam.
"""

"""``trailers synth``: the built-in demo corpus (:mod:`pipeline.synth.run`)."""

"""Stage ``validate``: TFDV checks the shards before training sees them.

``run`` (the stage), ``integrity`` (the manifest's rows), ``features`` (one shard -> its
integrity problems and an example of summary features), ``statistics`` (the Beam pipeline and
TFDV statistics per split), ``schema`` (the data contract and the config's thresholds),
``anomalies`` (TFDV's verdict in words), ``report`` (the outputs).
"""

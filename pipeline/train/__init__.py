"""``trailers train``: the stage (``run``), tf.data input from the shards (``dataset``), devices
and distribution (``devices``), the loss and metrics (``losses``) and the Keras callbacks
(``callbacks``)."""

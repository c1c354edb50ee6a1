"""The train stage: tf.data input from the shards, training, MLflow tracking."""

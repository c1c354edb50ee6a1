"""The genre classifier as an MLflow pyfunc: uint8 frames in, one timeline per genre out.

Logged as code (MLflow's "models from code": this file is the model, nothing is pickled): the
logged model carries this file and the ``pipeline`` package in its ``code_paths``, and MLflow
puts that copy on ``sys.path`` before it runs this file, so a process that has never imported
``pipeline`` (or that runs outside the repository) loads the model with
``mlflow.pyfunc.load_model`` alone. Importing :mod:`pipeline.model` registers the custom layers,
which is what lets ``keras.saving.load_model`` read the ``.keras`` file.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np

from pipeline import GENRES

KERAS_ARTIFACT = "keras_model"
"""The key of the ``.keras`` file in the logged model's artifacts."""


class GenreTimelineModel(mlflow.pyfunc.PythonModel):
    """``predict(frames)``: uint8 ``(batch, time, 3, rows, cols)`` ->
    ``{genre: float32 (batch, time)}``, each frame's probability of each genre."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import keras

        import pipeline.model  # noqa: F401  registers the layers the .keras file names

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)

    # np.ndarray is a type hint MLflow infers no signature from: the explicit uint8 tensor
    # signature the model is logged with is the one enforced.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        frames = np.asarray(model_input, dtype=np.uint8)
        # Called eagerly, not through keras.Model.predict: one trailer is one batch of any
        # length, and predict() failed on a batch of one with this model (model issue).
        outputs = self.model(frames, training=False)
        return {genre: np.asarray(outputs[genre], dtype=np.float32)[..., 0] for genre in GENRES}


mlflow.models.set_model(GenreTimelineModel())

"""A user's own Keras model, for examples/keras_fit.py (--model_fn=my_model:build).

Any float32 Keras model without batch norm or dropout can be traced; its module defines no flags
and trains nothing on import, because the verifier imports it to rebuild the model.
"""

import keras


def build() -> keras.Model:
  return keras.Sequential(
      [
          keras.Input((28, 28, 1)),
          keras.layers.Conv2D(8, 3, activation="relu"),
          keras.layers.MaxPooling2D(2),
          keras.layers.Flatten(),
          keras.layers.Dense(32, activation="relu"),
          keras.layers.Dense(10),
      ]
  )

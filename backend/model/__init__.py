"""The model: media fetching and decoding, frozen encoders, the feature store, VLMAE, training, the predictor."""

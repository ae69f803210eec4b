"""Training loops and objectives (autoencoder, world model, text-to-video)."""

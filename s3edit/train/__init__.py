"""Training: data sets, the preprocessing cache, and the loops for the autoencoder and editors."""

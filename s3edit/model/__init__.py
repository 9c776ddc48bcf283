"""The diffusion video autoencoder: conditioning, UNet, DDIM inversion and decoding."""

"""DSDG generator networks (dual VAE) and the LightCNN-29 v2 identity network."""

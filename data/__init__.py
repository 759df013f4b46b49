"""Data preparation (frames, face boxes, depth maps, training lists), OULU-NPU protocols and the synthetic dataset."""

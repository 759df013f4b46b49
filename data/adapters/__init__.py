"""Adapters that rewrite the SiW, CASIA-MFSD and Replay-Attack releases into the OULU-NPU layout."""

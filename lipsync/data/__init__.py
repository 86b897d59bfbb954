"""Corpus sources, decoding, faces, mels, splits, HDF5 packing and the torch Dataset."""

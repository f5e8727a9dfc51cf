"""formers.bytes: Byte-level transformers (bGPT, ByteFormer) on raw file bytes, on the formers core."""

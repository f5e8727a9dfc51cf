"""formers.vision: Vision transformers (T2T-ViT, PiT, CrossViT, Swin, kMaX-DeepLab) on the formers core."""

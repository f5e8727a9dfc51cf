"""formers.pde: neural-operator transformers for PDEs (FactFormer, Galerkin/Fourier transformer, GNOT)."""

"""formers.pde: Neural-operator transformers for PDEs (FactFormer, Galerkin/Fourier transformer, GNOT) on the formers core."""

"""XLA-friendly sparse and top-k operations over static shapes."""

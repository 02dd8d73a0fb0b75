"""`harness bench`: the input pipeline against the fast path (pipeline), packing (packing), fused seeds (fused), CUDA MPS (mps)."""

"""Real pycuda creates the CUDA context on import; there is none to create here."""

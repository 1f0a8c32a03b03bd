"""The whole-process pair: the reference program as a plain NumPy script and with portanet."""

"""The own-digit reader: a photo or scan of one digit made into an MNIST-style input."""

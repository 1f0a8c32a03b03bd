"""Saving a trained model: portanet's own .npz file and ONNX export."""

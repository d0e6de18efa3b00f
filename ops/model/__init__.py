"""quantized_base_model and the models every later step loads: device and CPU kernels, base resolution, 4-bit
quantization, loading, generation, merged export."""

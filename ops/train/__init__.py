"""qlora_adapter: LoRA training through the frozen 4-bit base (`python -m ops.train` runs it alone)."""

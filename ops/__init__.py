"""The QLoRA operations as plain Python: no Dagster import anywhere in this package.

Each module does one job (data preparation, quantization, training, evaluation, registration) and can be
run and tested on its own; the Dagster assets in `assets/` are thin wrappers around them.
"""

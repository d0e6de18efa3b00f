"""`python -m ops.train`: training alone, outside Dagster (also under `torchrun`); see ops/train/trainer.py."""

from .trainer import main

main()

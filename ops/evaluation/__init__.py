"""adapter_evaluation: base against base+adapter on the held-out split, the metric modules, the evaluation checks."""

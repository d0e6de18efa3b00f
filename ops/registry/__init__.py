"""registered_adapter: MLflow tracking, registration with its lock, the champion gate, registry lookup and the `qlora` CLI."""

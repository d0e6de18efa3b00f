"""What every step shares: the data home, file locks, fingerprints, the artifact store, derived code versions."""

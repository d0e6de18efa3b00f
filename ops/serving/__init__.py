"""The served model: the MLflow pyfunc class and how its code is copied, under its own package name, into a logged model."""

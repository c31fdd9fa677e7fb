"""mlmodel-serve: a fast, verified, observable model server for scikit-learn models."""

__version__ = "0.1.0"

"""The MLModel operator: deploy, monitor, retire, archive and replay ML models on Kubernetes."""

__version__ = "0.1.0"

GROUP = "ml.lifecycle.io"
VERSION = "v1alpha1"
PLURAL = "mlmodels"
KIND = "MLModel"

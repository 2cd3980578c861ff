"""The ctflow training container: `python -m ctflow_trainer`.

One training job per process. It reads its job from environment variables (Vertex
AI's custom-job contract plus ctflow's `CTFLOW_*` variables), verifies the dataset
version against its manifest, trains an MLP or a small CNN deterministically with
early stopping, checkpoints so a restarted job resumes, logs everything to MLflow,
writes a TorchServe-ready model to `AIP_MODEL_DIR`, and always reports a
`ctflow.training.completed.v1` CloudEvent. Importing this package does nothing else:
torch and mlflow are imported by the code paths that need them.
"""

__version__ = "0.1.0"

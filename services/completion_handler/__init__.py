"""completion-handler: training.completed → evaluate against the champion, register in MLflow."""

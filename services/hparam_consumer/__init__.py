"""hparam-consumer: hyperparameter messages (Pub/Sub push, Eventarc, Cloud Scheduler) → `training.requested`."""

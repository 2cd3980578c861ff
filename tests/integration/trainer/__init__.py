"""Tests of the training container (trainer_image/ctflow_trainer)."""

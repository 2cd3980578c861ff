"""Process entry point: `python -m ctflow_trainer [--lr 0.01 ...]`; exits 0 on success, 1 on failure."""

from ctflow_trainer.job import main

if __name__ == "__main__":
    raise SystemExit(main())

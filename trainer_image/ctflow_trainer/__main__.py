"""Process entry point: `python -m ctflow_trainer [--lr 0.01 ...]`; exit 0 on success, 1 if not."""

from ctflow_trainer.job import main

if __name__ == "__main__":
    raise SystemExit(main())

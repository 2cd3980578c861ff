"""The model server: TorchServe with ctflow's handler, one model per server (docs/serving.md)."""

"""deployer: model.registered → TorchServe revision with canary traffic."""

"""The in-job side, the same on every backend: `python -m runner.job`, the node launcher, the training run
(run directory, resume, manifest, engine, outputs) and the storage hook it is handed."""

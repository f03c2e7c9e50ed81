"""What the engines share inside a run: checkpoints, final outputs, metrics, trackers, signals, processes, data, schedules."""

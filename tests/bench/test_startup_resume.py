"""Start-up and resume: from `lockstep train` starting to its first training step, fresh and after a SIGTERM.

Each round starts the demo afresh, stops it with SIGTERM once step 20 is logged (lockstep
checkpoints at the next step boundary and exits 75), then runs the same command again, which
resumes from that checkpoint. Times run from the moment the process is started to the `time`
of the first metrics row of a training step (after the checkpoint, for the resume). The fresh
start includes the step-0 evaluation that a resumed run skips; both include interpreter start,
imports, config, preflight, the manifest and model loading; the resume also reads and verifies
the checkpoint (sha256 of every file) and restores optimizer, scheduler and RNG states. Also
reported: the time from the SIGTERM to the stop's checkpoint being durable (RUN/events.jsonl), what
must fit in a platform's grace period (Modal: 30 s; Slurm: KillWait).
"""

from __future__ import annotations

import re

from runner.rundir import EVENTS_FILE
from runner.training import checkpoint
from runner.util import jsonl
from tests.bench import measure
from tests.helpers import DEMO_CONFIG

STOP_AT = 20


def test_start_up_and_resume_to_the_first_step(benchmark, tmp_path):
    count = measure.rounds()

    def one_round(index: int) -> dict:
        run_dir = tmp_path / f"run-{index}"
        fresh = measure.lockstep_train(DEMO_CONFIG, run_dir, stop_after_step=STOP_AT)
        assert fresh.returncode == measure.EXIT_REQUEUE, fresh.stderr[-3000:]
        newest, rejected = checkpoint.CheckpointStore(run_dir).newest_valid()
        assert newest is not None and newest.step >= STOP_AT and not rejected
        resumed = measure.lockstep_train(DEMO_CONFIG, run_dir, stop_after_step=newest.step + 2)
        assert resumed.returncode == measure.EXIT_REQUEUE, resumed.stderr[-3000:]
        assert re.search(rf"resuming from step-0*{newest.step}\b", resumed.stderr), resumed.stderr[-3000:]
        first = resumed.first_step_after(newest.step)
        assert first["step"] == newest.step + 1 and first["grad_norm"] > 0
        (stop,) = [line for line in jsonl.read(run_dir / EVENTS_FILE).records if line["event"] == "stop" and line["attempt"] == 1]
        return {"fresh_s": fresh.seconds_to_first_step(), "resume_s": resumed.seconds_to_first_step(after=newest.step),
                "checkpoint_step": newest.step, "stop_to_durable_s": stop["signal_to_durable_s"]}

    results = benchmark.pedantic(lambda: [one_round(index) for index in range(count)], rounds=1, iterations=1)
    fresh = measure.median([r["fresh_s"] for r in results])
    resume = measure.median([r["resume_s"] for r in results])
    report = {
        "rounds": count,
        "fresh_start_to_first_step_s": round(fresh, 2),
        "resume_to_first_step_s": round(resume, 2),
        "resume_ratio": measure.ratio(resume, fresh),
        "fresh_spread": measure.spread([r["fresh_s"] for r in results]),
        "resume_spread": measure.spread([r["resume_s"] for r in results]),
        "resumed_from_step": results[0]["checkpoint_step"],
        "stop_to_durable_s": round(measure.median([r["stop_to_durable_s"] for r in results]), 3),
    }
    benchmark.extra_info.update(report)
    print(f"\ndemo: first training step {report['fresh_start_to_first_step_s']} s after start, {report['resume_to_first_step_s']} s after a "
          f"restart that resumes from step {report['resumed_from_step']}; the stop's checkpoint durable {report['stop_to_durable_s']} s "
          f"after SIGTERM ({count} rounds)")

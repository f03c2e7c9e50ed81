"""The node launcher: torchrun's command, and the node's true exit code from its workers' codes."""

from __future__ import annotations

from runner.job import launch


def write_codes(directory, codes):
    for rank, code in enumerate(codes):
        (directory / f"rank-{rank}").write_text(str(code))


def test_every_worker_stopped_after_a_checkpoint_means_requeue(tmp_path):
    write_codes(tmp_path, [75, 75])
    assert launch.node_exit_code(1, tmp_path, nproc=2) == 75  # torchrun says 1 for any failed worker


def test_a_worker_that_failed_or_vanished_keeps_torchruns_code(tmp_path):
    write_codes(tmp_path, [75, 3])
    assert launch.node_exit_code(1, tmp_path, nproc=2) == 1
    (tmp_path / "rank-1").unlink()
    assert launch.node_exit_code(1, tmp_path, nproc=2) == 1  # a worker killed before it could say
    assert launch.node_exit_code(0, tmp_path, nproc=2) == 0


def test_torchrun_command_per_node_count():
    one = launch.torchrun_argv(nnodes=1, nproc=2, node_rank=0, master_addr=None, master_port=29500, job_args=["c.yaml"])
    assert "--standalone" in one and one[-3:] == ["-m", "runner.job", "c.yaml"]
    two = launch.torchrun_argv(nnodes=2, nproc=4, node_rank=1, master_addr="node1", master_port=23456, job_args=["c.yaml"])
    assert {"--nnodes=2", "--nproc-per-node=4", "--node-rank=1", "--master-addr=node1", "--master-port=23456", "--max-restarts=0"} <= set(two)
    assert "--standalone" not in two


def test_ports_derived_from_job_ids_stay_in_range_and_differ():
    ports = {launch.port_for(str(job)) for job in range(1000, 1010)}
    assert len(ports) == 10 and all(launch.PORT_RANGE[0] <= port < launch.PORT_RANGE[1] for port in ports)
    assert launch.port_for(None) == launch.DEFAULT_PORT

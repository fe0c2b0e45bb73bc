"""detkit.runtime.distributed.launch_rank: the launcher's rank, outside any process group."""

from detkit.runtime.distributed import launch_rank


def test_launch_rank_reads_torchrun_rank_and_defaults_to_zero(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert launch_rank() == 0
    monkeypatch.setenv("RANK", "3")
    assert launch_rank() == 3

"""espnet2_almtok.tasks.DistributedTeardown: a DDP rank leaves training with its process group
destroyed (after a barrier), so no rank dies in the gloo destructor at exit; an error in training
propagates without entering the barrier."""

import pytest
import torch.distributed as dist
from espnet2.tasks.abs_task import AbsTask

from espnet2_almtok.tasks import DistributedTeardown
from espnet2_almtok.tasks.codec import ALMTokCodecTask
from espnet2_almtok.tasks.lm import ALMTokLMTask


class OneRankTraining:
    """Stands in for AbsTask.main_worker: joins a one-rank gloo group, then trains (or fails)."""

    calls = []

    @classmethod
    def main_worker(cls, args):
        dist.init_process_group("gloo", init_method=f"file://{args['store']}", rank=0, world_size=1)
        cls.calls.append("trained")
        if args.get("fail"):
            raise RuntimeError("training failed")


class Task(DistributedTeardown, OneRankTraining):
    pass


@pytest.fixture
def store(tmp_path):
    yield tmp_path / "store"
    if dist.is_initialized():
        dist.destroy_process_group()


def test_process_group_is_destroyed_after_training(store):
    Task.calls.clear()
    Task.main_worker({"store": store})
    assert Task.calls == ["trained"]
    assert not dist.is_initialized()


def test_an_error_in_training_propagates_and_leaves_the_group(store):
    with pytest.raises(RuntimeError, match="training failed"):
        Task.main_worker({"store": store, "fail": True})
    assert dist.is_initialized()  # no barrier entered: the other ranks may never reach it


def test_without_distributed_training_nothing_happens():
    trained = []

    class Base:
        @classmethod
        def main_worker(cls, args):
            trained.append(args)

    class NonDistributed(DistributedTeardown, Base):
        pass

    NonDistributed.main_worker("args")
    assert trained == ["args"] and not dist.is_initialized()


@pytest.mark.parametrize("task", [ALMTokCodecTask, ALMTokLMTask])
def test_our_tasks_tear_down_before_espnets_main_worker_returns(task):
    mro = task.__mro__
    assert mro.index(DistributedTeardown) < mro.index(AbsTask)
    mro = task.__mro__  # every main_worker of ours calls super(): the teardown wraps ESPnet's
    assert DistributedTeardown in mro and mro.index(DistributedTeardown) < mro.index(AbsTask)

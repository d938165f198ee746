"""Durable timers in a real Redis: one live timer per rule and ticket, queued once when due."""

from workers.queue import make_queue
from workers.timers import TimerStore, job_id, member


def test_arm_cancel_and_re_arm(redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    assert timers.get("auto-close", "SUP-1").due == 1000.0
    timers.arm("auto-close", "SUP-1", 2000.0, "g2")          # re-arming replaces
    assert (timers.get("auto-close", "SUP-1").due, timers.count()) == (2000.0, 1)
    timers.cancel("auto-close", "SUP-1")
    assert timers.get("auto-close", "SUP-1") is None and timers.count() == 0


def test_pump_queues_only_due_timers_once(redis):
    timers, queue = TimerStore(redis), make_queue(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    timers.arm("auto-close", "SUP-2", 5000.0, "g1")
    assert timers.pump(queue, 999.0) == 0
    assert timers.pump(queue, 1000.0) == 1
    assert timers.pump(queue, 1000.0) == 0                   # no longer pending
    assert queue.job_ids == [job_id(member("auto-close", "SUP-1"), "g1")]
    assert [t.ticket for t in timers.pending()] == ["SUP-2"]


def test_a_pump_that_died_before_unqueueing_queues_nothing_new(redis):
    timers, queue = TimerStore(redis), make_queue(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    timers.pump(queue, 1000.0)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")          # as if the unqueue had not happened
    timers.pump(queue, 1000.0)
    assert len(queue.job_ids) == 1


def test_release_only_forgets_the_same_generation(redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    timers.arm("auto-close", "SUP-1", 3000.0, "g2")          # re-armed while g1 was firing
    assert timers.release(member("auto-close", "SUP-1"), "g1") is False
    assert timers.generation(member("auto-close", "SUP-1")) == "g2"
    assert timers.release(member("auto-close", "SUP-1"), "g2") is True
    assert timers.generation(member("auto-close", "SUP-1")) is None

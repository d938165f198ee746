"""Durable timers in a real Redis: one live timer per rule and ticket, queued once when due."""

from workers.stores.queue import make_queue
from workers.stores.timers import TimerStore, job_id, member


def test_arm_cancel_and_re_arm(redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    assert timers.get("auto-close", "SUP-1").due == 1000.0
    timers.arm("auto-close", "SUP-1", 2000.0, "g2")          # re-arming replaces
    assert (timers.get("auto-close", "SUP-1").due, timers.count()) == (2000.0, 1)
    timers.cancel("auto-close", "SUP-1")
    assert timers.get("auto-close", "SUP-1") is None and timers.count() == 0


def test_pump_queues_only_due_timers_once(redis):
    timers, queue = TimerStore(redis, lease=65), make_queue(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    timers.arm("auto-close", "SUP-2", 5000.0, "g1")
    assert timers.pump(queue, 999.0) == 0
    assert timers.pump(queue, 1000.0) == 1
    assert timers.pump(queue, 1000.0) == 0                   # claimed: not due again before its lease ends
    assert queue.job_ids == [job_id(member("auto-close", "SUP-1"), "g1")]
    # It stays in the index until its job releases it.
    assert [(t.ticket, t.due) for t in timers.pending()] == [("SUP-1", 1065.0), ("SUP-2", 5000.0)]
    assert timers.release(member("auto-close", "SUP-1"), "g1")
    assert [t.ticket for t in timers.pending()] == ["SUP-2"]


def test_a_claimed_timer_whose_job_never_released_it_is_queued_again_after_the_lease(redis):
    timers, queue = TimerStore(redis, lease=65), make_queue(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    assert timers.pump(queue, 1000.0) == 1
    queue.empty()                                            # the job was lost (say, Redis failed over)
    assert timers.pump(queue, 1064.0) == 0
    assert timers.pump(queue, 1065.0) == 1
    assert queue.job_ids == [job_id(member("auto-close", "SUP-1"), "g1")]


def test_a_timer_cancelled_and_re_armed_while_the_pump_runs_is_never_lost(redis):
    """The pump's claim is one atomic step: a re-arm racing with it survives (it was lost before)."""
    import threading
    timers, queue = TimerStore(redis, lease=3600), make_queue(redis)
    m = member("auto-close", "SUP-1")
    stop = threading.Event()

    def pump():
        while not stop.is_set():
            timers.pump(queue, 10_000.0)

    thread = threading.Thread(target=pump)
    thread.start()
    try:
        for i in range(1500):
            timers.cancel("auto-close", "SUP-1")
            timers.arm("auto-close", "SUP-1", 1000.0 + i, f"g{i}")
            # The live generation is always in the index, pending or claimed.
            assert timers.get("auto-close", "SUP-1") is not None, f"re-arm {i} lost"
    finally:
        stop.set()
        thread.join()
    assert timers.generation(m) == "g1499"


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

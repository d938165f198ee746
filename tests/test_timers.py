"""Durable timers in a real Redis: one live timer per rule and ticket, claimed once when due and queued
in firing jobs ahead of the deliveries waiting."""

from workers.stores.queue import enqueue_delivery, make_queue
from workers.stores.timers import TimerStore, member


def queued_timers(queue) -> list[list]:
    """The timers of each firing job in the queue, in queue order: [[(member, generation), ...], ...]."""
    return [[(m, g) for m, g, _ in job.args[0]] for job in queue.get_jobs()
            if job.func_name == "workers.timer_jobs.fire_timers"]


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
    assert queued_timers(queue) == [[(member("auto-close", "SUP-1"), "g1")]]
    # It stays in the index until it is done with, marked firing meanwhile.
    assert [(t.ticket, t.due) for t in timers.pending()] == [("SUP-1", 1065.0), ("SUP-2", 5000.0)]
    assert timers.firing([member("auto-close", "SUP-1"), member("auto-close", "SUP-2")], 1000.0) == {
        member("auto-close", "SUP-1")}
    assert timers.release(member("auto-close", "SUP-1"), "g1")
    assert [t.ticket for t in timers.pending()] == ["SUP-2"]
    assert timers.firing([member("auto-close", "SUP-1")], 1000.0) == set()


def test_due_timers_are_queued_in_firing_jobs_ahead_of_the_deliveries_waiting(redis):
    timers, queue = TimerStore(redis), make_queue(redis)
    for i in range(3):
        enqueue_delivery(queue, f"d{i}")
    for i in range(5):
        timers.arm("auto-close", f"SUP-{i}", 1000.0 + i, "g1")
    assert timers.pump(queue, 2000.0, job_size=2) == 5
    assert [j.split("-")[0] for j in queue.job_ids] == ["timers"] * 3 + ["delivery"] * 3
    assert sorted(t for job in queued_timers(queue) for t in job) == [
        (member("auto-close", f"SUP-{i}"), "g1") for i in range(5)]
    assert sorted(len(job) for job in queued_timers(queue)) == [1, 2, 2]


def test_pumps_claim_no_more_while_enough_firing_jobs_wait(redis):
    """A burst is claimed as the workers get through it, so no claimed timer's lease runs out queued."""
    timers, queue = TimerStore(redis), make_queue(redis)
    for i in range(30):
        timers.arm("auto-close", f"SUP-{i}", 1000.0, "g1")
    assert timers.pump(queue, 2000.0, job_size=2, waiting=3) == 6
    assert timers.pump(queue, 2000.0, job_size=2, waiting=3) == 0
    redis.lpop(queue.key)                                    # a worker takes one job
    assert timers.pump(queue, 2000.0, job_size=2, waiting=3) == 2
    assert len(queue.job_ids) == 3
    assert len(timers.firing([member("auto-close", f"SUP-{i}") for i in range(30)], 2000.0)) == 8


def test_a_claimed_timer_whose_job_never_released_it_is_queued_again_after_the_lease(redis):
    timers, queue = TimerStore(redis, lease=65), make_queue(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    assert timers.pump(queue, 1000.0) == 1
    queue.empty()                                            # the job was lost (say, Redis failed over)
    assert timers.pump(queue, 1064.0) == 0
    assert timers.pump(queue, 1065.0) == 1
    assert queued_timers(queue) == [[(member("auto-close", "SUP-1"), "g1")]]


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


def test_cancelling_or_re_arming_a_firing_timer_clears_its_firing_mark(redis):
    timers, queue = TimerStore(redis), make_queue(redis)
    m = member("auto-close", "SUP-1")
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    timers.pump(queue, 1000.0)
    timers.arm("auto-close", "SUP-1", 3000.0, "g2")          # re-armed while g1 fires: g2 is pending, not firing
    assert timers.firing([m], 1000.0) == set()
    timers.pump(queue, 3000.0)
    timers.cancel("auto-close", "SUP-1")
    assert timers.firing([m], 3000.0) == set() and timers.get("auto-close", "SUP-1") is None


def test_release_only_forgets_the_same_generation(redis):
    timers = TimerStore(redis)
    timers.arm("auto-close", "SUP-1", 1000.0, "g1")
    timers.arm("auto-close", "SUP-1", 3000.0, "g2")          # re-armed while g1 was firing
    assert timers.release(member("auto-close", "SUP-1"), "g1") is False
    assert timers.generation(member("auto-close", "SUP-1")) == "g2"
    assert timers.release(member("auto-close", "SUP-1"), "g2") is True
    assert timers.generation(member("auto-close", "SUP-1")) is None


def test_the_soonest_due_timers_are_fired_first(redis):
    timers, queue = TimerStore(redis), make_queue(redis)
    for i in range(6):
        timers.arm("auto-close", f"SUP-{i}", 1000.0 + i, "g1")
    timers.pump(queue, 2000.0, job_size=2)
    assert queued_timers(queue) == [[(member("auto-close", f"SUP-{i}"), "g1") for i in pair]
                                    for pair in ((0, 1), (2, 3), (4, 5))]

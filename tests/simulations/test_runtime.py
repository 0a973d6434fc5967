"""The engine-poll adjustment of simulations.runtime: in place only over the loop it was
written against, same behaviour as Flower's loop, Flower's put back afterwards."""

from __future__ import annotations

import logging
import queue
import threading
import time

from flwr.server.superlink.fleet.vce import vce_api

from simulations import runtime


def test_flowers_loop_is_still_the_one_the_adjustment_replaces():
    # fails on a Flower upgrade that changes the engine's loop: re-check the adjustment then
    import inspect

    source = inspect.getsource(vce_api.add_messages_to_queue)
    assert runtime._FLOWER_POLL in source and "get_message_ins" in source


def test_the_adjustment_is_in_place_only_inside_and_flowers_loop_comes_back():
    original = vce_api.add_messages_to_queue
    with runtime.fast_engine_poll() as applied:
        assert applied
        assert vce_api.add_messages_to_queue is runtime._fast_add_messages_to_queue
        with runtime.fast_engine_poll() as nested:  # nested: stays in place
            assert nested
        assert vce_api.add_messages_to_queue is runtime._fast_add_messages_to_queue
    assert vce_api.add_messages_to_queue is original


def test_overlapping_runs_share_the_adjustment_until_the_last_one_ends():
    original = vce_api.add_messages_to_queue
    first, second = runtime.fast_engine_poll(), runtime.fast_engine_poll()
    assert first.__enter__() and second.__enter__()
    with runtime.fast_engine_poll(), runtime.fast_engine_poll():  # and nesting never blocks
        pass
    first.__exit__(None, None, None)  # the other run's engine may still start: stays in place
    assert vce_api.add_messages_to_queue is runtime._fast_add_messages_to_queue
    second.__exit__(None, None, None)
    assert vce_api.add_messages_to_queue is original


def test_a_changed_flower_loop_is_left_alone_with_a_warning(monkeypatch, caplog):
    def other_loop(state, queue, nodes_mapping, f_stop):  # a future Flower's loop
        while not f_stop.is_set():
            f_stop.wait(0.2)

    monkeypatch.setattr(vce_api, "add_messages_to_queue", other_loop)
    with caplog.at_level(logging.WARNING), runtime.fast_engine_poll() as applied:
        assert not applied
        assert vce_api.add_messages_to_queue is other_loop
    assert "left as Flower ships it" in caplog.text


class _State:
    """LinkState's get_message_ins: at most ``limit`` queued messages of a node."""

    def __init__(self, pending):
        self.pending = {k: list(v) for k, v in pending.items()}
        self.lock = threading.Lock()

    def get_message_ins(self, node_id, limit):
        with self.lock:
            out, self.pending[node_id] = (
                self.pending[node_id][:limit],
                self.pending[node_id][limit:],
            )
        return out

    def push(self, node_id, msg):
        with self.lock:
            self.pending[node_id].append(msg)


def test_the_loop_moves_every_message_one_per_node_per_pass_and_without_flowers_wait():
    state = _State({1: ["a1", "a2"], 2: ["b1"]})
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    th = threading.Thread(
        target=runtime._fast_add_messages_to_queue, args=(state, q, {1: 0, 2: 1}, stop)
    )
    th.start()
    try:
        got = [q.get(timeout=2) for _ in range(3)]
        assert sorted(got) == ["a1", "a2", "b1"]
        assert got.index("a1") < got.index("a2")
        time.sleep(0.05)
        t0 = time.perf_counter()
        state.push(2, "late")
        assert q.get(timeout=2) == "late"
        # picked up within a few ms, not Flower's 100 ms (generous bound for a loaded machine)
        assert time.perf_counter() - t0 < 0.05
    finally:
        stop.set()
        th.join(2)
    assert not th.is_alive()


def test_the_wait_grows_with_the_cost_of_a_pass_up_to_flowers(monkeypatch):
    waits: list[float] = []

    class _Stop:
        def is_set(self):
            return len(waits) >= 3

        def wait(self, s):
            waits.append(s)

    class _Slow:
        def get_message_ins(self, node_id, limit):
            time.sleep(0.004)
            return []

    runtime._fast_add_messages_to_queue(_Slow(), queue.Queue(), {1: 0, 2: 1, 3: 2}, _Stop())
    # a pass over 3 nodes takes >= 12 ms: waiting 4x that keeps the loop under 20% of a core
    assert all(w >= 0.048 for w in waits) and all(w <= 0.1 for w in waits)

"""DevicePrefetcher: the next batch is placed before the current one is consumed."""
import time

from bert.partitioning import DevicePrefetcher


def test_batches_come_in_order_placed_one_step_ahead():
    placed = []

    def place(batch):
        placed.append(batch)
        return {"placed": batch}

    prefetcher = DevicePrefetcher(iter(range(4)), place)
    assert next(prefetcher) == {"placed": 0}
    assert placed == [0, 1]  # batch 1 is already on the devices while step 0 runs
    assert [b["placed"] for b in prefetcher] == [1, 2, 3]
    assert placed == [0, 1, 2, 3]


def test_wait_seconds_counts_time_blocked_on_the_host_pipeline():
    def slow_batches():
        for i in range(3):
            time.sleep(0.05)
            yield i

    prefetcher = DevicePrefetcher(slow_batches(), lambda batch: batch)
    assert list(prefetcher) == [0, 1, 2]
    assert 0.15 <= prefetcher.wait_seconds < 1.0

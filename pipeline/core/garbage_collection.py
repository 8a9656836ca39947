"""Python's cyclic garbage collector, tuned for a process that allocates millions of short-lived
containers, none in a cycle.

With the defaults the collector runs every 700 net container allocations, and each full pass walks
every object of the process (Beam, pyarrow, the graph of the pipeline). Parsing allocates several
lists and structs per annotation, and the launcher of a local run builds the graph and then moves the
runner's data: with the defaults the collector takes a large share of both."""
import gc

GC_YOUNG_THRESHOLD = 100_000


def tune_garbage_collector() -> None:
    """Once the process's imports are done: what is alive then is frozen (no pass walks it again), and
    the youngest generation is collected every GC_YOUNG_THRESHOLD allocations. Worker processes forked
    after this inherit both."""
    gc.freeze()
    if gc.get_threshold()[0] < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)

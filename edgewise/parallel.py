"""Process pools that are safe in processes that already run threads.

``fork`` copies a process with its threads' locks held (torch's and JAX's thread pools, which
litert-torch starts), which can deadlock the child. Pools here use ``forkserver`` where the
platform has it: children start from a clean single-threaded server and import only the module
of the function they run.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int, **kwargs) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes; ``kwargs`` go to ProcessPoolExecutor (``initializer``, ``initargs``)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, **kwargs)

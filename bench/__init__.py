"""The ssmbench harness: suites, data, training, metrics, profiling, store, reports, search."""

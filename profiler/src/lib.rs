//! parva-profiler: the sweep behind `parva profile` (being written).

//! parva-profiler: sweeps instance size x batch x MPS processes on a GPU and writes profile
//! tables. See `profiler/README.md`.

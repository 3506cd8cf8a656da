//! parva-runner: the node runtime. It will hold MIG/MPS control behind narrow traits (with
//! stateful fakes), the inference worker protocol and supervisor, and the KServe v2 router with
//! deadline-aware dynamic batching. See `runner/README.md`.

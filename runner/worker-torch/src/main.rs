//! parva-worker: the TorchScript worker (being written).
fn main() {}

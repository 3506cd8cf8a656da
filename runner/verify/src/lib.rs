//! parva-verify: the open-loop load generator behind `parva verify` (being written).

//! `parva verify` end to end (being written).

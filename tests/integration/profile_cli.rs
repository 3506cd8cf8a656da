//! `parva profile` end to end (being written).

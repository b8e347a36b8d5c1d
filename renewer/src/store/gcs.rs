//! Cloud Storage store (being written).

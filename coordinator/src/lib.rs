//! Flotilla coordinator.

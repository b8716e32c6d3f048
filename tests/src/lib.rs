//! Helpers for Flotilla's cross-process tests.

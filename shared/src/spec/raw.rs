//! Raw TOML shapes.

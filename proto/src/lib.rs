//! Generated gRPC code for the `flotilla.v1` package.

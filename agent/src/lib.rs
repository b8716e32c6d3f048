//! Flotilla agent.

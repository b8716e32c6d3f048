//! Actions: what the leader must do once a fact holds. The engine says it; the
//! coordinator's driver does it, knowing nothing of the facts that led there.

use std::fmt;

use flotilla_shared::model::HostId;
use serde::{Deserialize, Serialize};

use super::fact::CommandId;

/// One thing for the leader to do for a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Send step `command` to `host`. The agent's command is built from the run's
    /// record of the step and the release's spec, so it is the same each time it is
    /// sent (only the leader's term differs).
    Send {
        /// The step.
        command: CommandId,
        /// Its host.
        host: HostId,
    },
    /// Ask `host` to stop step `command`: the release no longer wants it.
    Cancel {
        /// The step.
        command: CommandId,
        /// Its host.
        host: HostId,
    },
}

impl Action {
    /// The step it is about.
    pub fn command(&self) -> &CommandId {
        match self {
            Action::Send { command, .. } | Action::Cancel { command, .. } => command,
        }
    }

    /// The host it goes to.
    pub fn host(&self) -> &HostId {
        match self {
            Action::Send { host, .. } | Action::Cancel { host, .. } => host,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Send { command, host } => write!(f, "send {command} to {host}"),
            Action::Cancel { command, host } => write!(f, "cancel {command} on {host}"),
        }
    }
}

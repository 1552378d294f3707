//! Why a libvirt session could not be opened, and how libvirt's own
//! errors are told apart.

use std::time::Duration;

use super::ffi::{code, VirErr};
use super::lookup::ResolvedUri;

/// Why a libvirt session could not be opened. Every message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LibvirtError {
    /// libvirt's client library could not be loaded.
    #[error(
        "cannot load libvirt's client library {library} ({reason}); install it: \
         apt-get install libvirt0 (Debian, Ubuntu) or dnf install libvirt-libs (Fedora, RHEL)"
    )]
    LibraryMissing {
        /// The file that could not be loaded, e.g. `libvirt.so.0`.
        library: String,
        /// Why, as the dynamic loader said.
        reason: String,
    },
    /// The connection to libvirt failed.
    #[error("cannot connect to libvirt at {uri}: {message}")]
    CannotConnect {
        /// The URI, and where it came from when the caller gave none.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// libvirt (or the system) refused access.
    #[error("permission denied by libvirt at {uri}: {message}")]
    PermissionDenied {
        /// The URI, and where it came from when the caller gave none.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// No domain has that name, UUID or id.
    #[error(
        "no domain {domain} at {uri} (tried as name, UUID and id; `virsh list --all` shows them)"
    )]
    NoSuchDomain {
        /// The domain as given.
        domain: String,
        /// The URI, and where it came from when the caller gave none.
        uri: String,
    },
    /// The text names different domains as an id, a UUID and a name (a
    /// domain called `37` beside another whose id is 37, say): nothing is
    /// opened.
    #[error("{}", ambiguity(domain, uri, matches))]
    Ambiguous {
        /// The domain as given.
        domain: String,
        /// The URI, and where it came from when the caller gave none.
        uri: String,
        /// What the text matched, in the order tried (id, UUID, name).
        matches: Vec<DomainMatch>,
    },
    /// The domain exists but QEMU is not running.
    #[error("domain {domain} is not running (start it with `virsh start {domain}`)")]
    NotRunning {
        /// The domain's name.
        domain: String,
    },
    /// Agent mode: the domain has no guest agent channel, or no agent is
    /// listening on it.
    #[error("domain {domain} has no guest agent to talk to: {message}")]
    NoAgent {
        /// The domain's name.
        domain: String,
        /// libvirt's message.
        message: String,
    },
    /// QEMU did not answer `query-version` in time (it is stopped, say).
    #[error(
        "QEMU of domain {domain} did not answer within {} s (is its process stopped or hung?)",
        timeout.as_secs_f64()
    )]
    NoAnswer {
        /// The domain's name.
        domain: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// Any other failure reported by libvirt.
    #[error("libvirt: {message}")]
    Libvirt {
        /// What failed, with libvirt's message.
        message: String,
    },
}

/// How a domain was found from the text that named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// As its numeric id (running domains have one).
    Id,
    /// As its UUID.
    Uuid,
    /// As its name.
    Name,
}

impl std::fmt::Display for MatchedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatchedBy::Id => "id",
            MatchedBy::Uuid => "UUID",
            MatchedBy::Name => "name",
        })
    }
}

/// One domain that a text matched, and as what
/// ([`LibvirtError::Ambiguous`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMatch {
    /// What the text matched: the domain's id, UUID or name.
    pub by: MatchedBy,
    /// The domain's name.
    pub name: String,
    /// The domain's UUID.
    pub uuid: String,
}

/// The message of [`LibvirtError::Ambiguous`], one line.
fn ambiguity(domain: &str, uri: &str, matches: &[DomainMatch]) -> String {
    let what: Vec<String> = matches
        .iter()
        .map(|m| match m.by {
            MatchedBy::Uuid => format!("the UUID of domain {}", m.name),
            by => format!("the {by} of domain {} (UUID {})", m.name, m.uuid),
        })
        .collect();
    format!(
        "domain {domain} is ambiguous at {uri}: it is {}; give the UUID of the one you mean",
        what.join(" and ")
    )
}

/// Turn a libvirt error into the [`LibvirtError`] it stands for.
pub(super) fn classify(e: VirErr, uri: &str, what: &str) -> LibvirtError {
    if is_permission_denied(&e) {
        LibvirtError::PermissionDenied {
            uri: uri.to_owned(),
            message: e.message,
        }
    } else {
        LibvirtError::Libvirt {
            message: format!("{what}: {}", e.message),
        }
    }
}

/// Whether libvirt (or the system) refused access.
pub(super) fn is_permission_denied(e: &VirErr) -> bool {
    matches!(
        e.code,
        code::VIR_ERR_ACCESS_DENIED
            | code::VIR_ERR_OPERATION_DENIED
            | code::VIR_ERR_AUTH_FAILED
            | code::VIR_ERR_AUTH_CANCELLED
            | code::VIR_ERR_AUTH_UNAVAILABLE
    ) || e.message.contains("Permission denied")
}

/// A call failed and the connection or the domain is gone: say which.
pub(super) fn not_running_or(e: VirErr, uri: &ResolvedUri, domain: &str) -> LibvirtError {
    match e.code {
        code::VIR_ERR_OPERATION_INVALID | code::VIR_ERR_NO_DOMAIN => LibvirtError::NotRunning {
            domain: domain.to_owned(),
        },
        _ => LibvirtError::CannotConnect {
            uri: uri.described.clone(),
            message: e.message,
        },
    }
}

pub(super) fn is_agent_error(e: &VirErr) -> bool {
    matches!(
        e.code,
        code::VIR_ERR_ARGUMENT_UNSUPPORTED
            | code::VIR_ERR_AGENT_UNRESPONSIVE
            | code::VIR_ERR_AGENT_UNSYNCED
    )
}

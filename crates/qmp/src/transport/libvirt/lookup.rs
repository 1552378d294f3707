//! Finding things at a libvirt URI: which URI (given, from
//! `$LIBVIRT_DEFAULT_URI`, or the default), the running domains, and the
//! domain a text names (as an id, a UUID or a name), with the rule for
//! texts that name different domains.

use std::ffi::{c_int, CString};

use super::connection::{Connection, Domain};
use super::error::{classify, DomainMatch, LibvirtError, MatchedBy};
use super::ffi::{self, code, virDomainPtr};
use super::DEFAULT_URI;

/// A running domain, as listed by [`list_domains`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain's name.
    pub name: String,
    /// Its id (running domains have one).
    pub id: u32,
    /// Its UUID, in the usual 36-character form.
    pub uuid: String,
}

/// The running domains at `uri` (default: `$LIBVIRT_DEFAULT_URI`, else
/// [`DEFAULT_URI`]), by id.
pub fn list_domains(uri: Option<&str>) -> Result<Vec<DomainInfo>, LibvirtError> {
    let lib = ffi::lib()?;
    let uri = ResolvedUri::new(uri);
    let conn = Connection::open(lib, &uri)?;
    let mut list: *mut virDomainPtr = std::ptr::null_mut();
    // SAFETY: a live connection and a valid out-pointer; on success libvirt
    // stores a malloc'ed array of `n` domain references in `list`.
    let n = unsafe {
        (lib.virConnectListAllDomains)(conn.ptr, &mut list, ffi::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    };
    if n < 0 {
        return Err(classify(
            lib.take_error(),
            &uri.described,
            "cannot list domains",
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `i < n`, within the array; each element is a reference
        // we own, released when `dom` drops.
        let dom = Domain {
            lib,
            ptr: unsafe { *list.add(i) },
        };
        out.push(DomainInfo {
            name: dom.name(),
            id: dom.id().unwrap_or(0),
            uuid: dom.uuid(),
        });
    }
    // SAFETY: the array was allocated by libvirt with malloc; its elements
    // were released above.
    unsafe { libc::free(list.cast()) };
    out.sort_by(|a, b| (a.id, &a.name).cmp(&(b.id, &b.name)));
    Ok(out)
}

/// The URI to connect to and how to name it in messages.
pub(super) struct ResolvedUri {
    pub(super) uri: String,
    pub(super) described: String,
}

impl ResolvedUri {
    pub(super) fn new(given: Option<&str>) -> ResolvedUri {
        if let Some(uri) = given {
            return ResolvedUri {
                uri: uri.to_owned(),
                described: uri.to_owned(),
            };
        }
        match std::env::var("LIBVIRT_DEFAULT_URI") {
            Ok(uri) if !uri.is_empty() => ResolvedUri {
                described: format!("{uri} (from $LIBVIRT_DEFAULT_URI)"),
                uri,
            },
            _ => ResolvedUri {
                uri: DEFAULT_URI.to_owned(),
                described: format!("{DEFAULT_URI} (the default)"),
            },
        }
    }
}

/// Whether `text` looks like a UUID (with or without dashes).
pub(super) fn uuid_like(text: &str) -> bool {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (text.len() == 32 || text.len() == 36)
}

/// Find the domain that `spec` names, as an id (if it is all digits), a
/// UUID (if it looks like one) and a name. Matches that are one domain are
/// one; matches that are different domains (a domain called `37` beside
/// another whose id is 37) are [`LibvirtError::Ambiguous`]: acting on
/// either could be acting on a VM the user did not mean. This is the one
/// place where a domain given by the user is resolved.
pub(super) fn lookup(conn: &Connection, spec: &str, uri: &str) -> Result<Domain, LibvirtError> {
    let lib = conn.lib;
    let not_found = || LibvirtError::NoSuchDomain {
        domain: spec.to_owned(),
        uri: uri.to_owned(),
    };
    let Ok(cspec) = CString::new(spec) else {
        return Err(not_found());
    };
    let mut ways = Vec::with_capacity(3);
    if let Ok(id) = spec.parse::<c_int>() {
        if id >= 0 {
            ways.push((MatchedBy::Id, id));
        }
    }
    if uuid_like(spec) {
        ways.push((MatchedBy::Uuid, 0));
    }
    ways.push((MatchedBy::Name, 0));
    let mut found: Vec<(MatchedBy, Domain)> = Vec::with_capacity(ways.len());
    for (by, id) in ways {
        // SAFETY: a live connection and a NUL-terminated string; libvirt
        // returns null or a new reference, released by `Domain`.
        let ptr = unsafe {
            match by {
                MatchedBy::Id => (lib.virDomainLookupByID)(conn.ptr, id),
                MatchedBy::Uuid => (lib.virDomainLookupByUUIDString)(conn.ptr, cspec.as_ptr()),
                MatchedBy::Name => (lib.virDomainLookupByName)(conn.ptr, cspec.as_ptr()),
            }
        };
        if !ptr.is_null() {
            found.push((by, Domain { lib, ptr }));
            continue;
        }
        let e = lib.take_error();
        match e.code {
            code::VIR_ERR_NO_DOMAIN | code::VIR_ERR_INVALID_DOMAIN => {}
            _ => return Err(classify(e, uri, "cannot look the domain up")),
        }
    }
    let uuids: Vec<String> = found.iter().map(|(_, d)| d.uuid()).collect();
    if uuids.iter().any(|u| *u != uuids[0]) {
        return Err(LibvirtError::Ambiguous {
            domain: spec.to_owned(),
            uri: uri.to_owned(),
            matches: found
                .iter()
                .zip(uuids)
                .map(|((by, d), uuid)| DomainMatch {
                    by: *by,
                    name: d.name(),
                    uuid,
                })
                .collect(),
        });
    }
    found
        .into_iter()
        .next()
        .map(|(_, d)| d)
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_recognised() {
        assert!(uuid_like("737ba781-329d-41bb-8446-15ef507b3a17"));
        assert!(uuid_like("737ba781329d41bb844615ef507b3a17"));
        assert!(!uuid_like("vm1"));
        assert!(!uuid_like("737ba781-329d-41bb-8446-15ef507b3a1"));
    }
}

//! Who is calling, and what they may do.
//!
//! Callers authenticate with bearer tokens ([`tokens::TokenStore`]); each token has a role, an
//! optional instance-name prefix that scopes it to one tenant, and a quota. While no token
//! exists, authentication is off and every caller is the anonymous administrator: that is the
//! single-user, loopback-only setup, and the daemon refuses to listen beyond loopback in that
//! state unless TLS is configured or `Insecure` is set. Creating the first token turns
//! authentication on.
//!
//! [`Caller`] values are immutable and cheap to clone; the rate limiter is the only shared
//! mutable state here, behind a mutex held for a few instructions.

pub mod rate;
pub mod tokens;

use rhyzome_api::validate::FieldError;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this request needs a bearer token (Authorization: Bearer rhz_...)")]
    Missing,
    #[error("the token is not valid (unknown or revoked)")]
    Invalid,
    #[error("the {role} role may not {action}")]
    Forbidden { role: Role, action: &'static str },
    #[error("quota exceeded: {limit} is {max} for {caller}, and this request needs {wanted}")]
    Quota {
        caller: String,
        limit: &'static str,
        max: u64,
        wanted: u64,
    },
    #[error("{0}")]
    OutOfScope(FieldError),
    #[error("too many creates from {caller}; retry in a moment")]
    RateLimited { caller: String },
}

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read `GET /metrics` and nothing else: the token a Prometheus server keeps in a file.
    Metrics,
    /// Read instances, consoles and events.
    Viewer,
    /// Also create, start, stop, restart and delete instances and images, within the quota.
    Operator,
    /// Everything, with no quota or prefix.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "metrics" => Some(Role::Metrics),
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits of one token (a tenant), in the spirit of Albatross policies. `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub max_instances: Option<u32>,
    pub max_total_memory_mib: Option<u64>,
    pub max_instance_memory_mib: Option<u32>,
    /// Bridges instances may join; `None` allows any.
    pub bridges: Option<Vec<String>>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name, `anonymous` while authentication is off, or `local:uid=N` on the local
    /// socket.
    pub name: String,
    pub role: Role,
    /// Instance names this caller sees and creates must start with this.
    pub prefix: Option<String>,
    pub quota: Quota,
}

impl Caller {
    /// The caller while no token exists: full rights, as on a single-user machine.
    pub fn anonymous() -> Caller {
        Caller {
            name: "anonymous".into(),
            role: Role::Admin,
            prefix: None,
            quota: Quota::default(),
        }
    }

    /// A process on this host that reached the local socket without presenting a token: the
    /// socket's permissions already admitted it. The name cannot clash with a token's, since
    /// token names have no ':'.
    pub fn local(uid: u32) -> Caller {
        Caller {
            name: format!("local:uid={uid}"),
            role: Role::Admin,
            prefix: None,
            quota: Quota::default(),
        }
    }

    /// The daemon itself, its tests and tools, calling the service directly: full rights.
    /// The HTTP layer never produces it (it only yields [`Caller::anonymous`],
    /// [`Caller::local`] and token callers), and the name cannot clash with a token's, since
    /// token names have no ':'.
    pub fn internal() -> Caller {
        Caller {
            name: "internal:daemon".into(),
            role: Role::Admin,
            prefix: None,
            quota: Quota::default(),
        }
    }

    pub fn require(&self, role: Role, action: &'static str) -> Result<(), AuthError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                role: self.role,
                action,
            })
        }
    }

    /// Whether this caller may see the instance `name` at all. Instances outside the scope are
    /// reported as not found, so that tenants cannot probe each other's names.
    pub fn sees(&self, name: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| name.starts_with(p))
    }

    /// Checks a new instance's name against the caller's prefix.
    pub fn may_name(&self, name: &str) -> Result<(), AuthError> {
        match &self.prefix {
            Some(p) if !name.starts_with(p.as_str()) => {
                Err(AuthError::OutOfScope(FieldError::new(
                    "name",
                    format!("must start with {p:?}, the prefix of token {:?}", self.name),
                )))
            }
            _ => Ok(()),
        }
    }

    /// Checks a create against the quota, given the caller's current instances
    /// (`(count, total memory)`).
    pub fn check_quota(
        &self,
        memory_mib: u32,
        bridge: Option<&str>,
        current: (u32, u64),
    ) -> Result<(), AuthError> {
        let q = &self.quota;
        let over = |limit: &'static str, max: u64, wanted: u64| AuthError::Quota {
            caller: self.name.clone(),
            limit,
            max,
            wanted,
        };
        if let Some(max) = q.max_instance_memory_mib {
            if memory_mib > max {
                return Err(over(
                    "max_instance_memory_mib",
                    max.into(),
                    memory_mib.into(),
                ));
            }
        }
        if let Some(max) = q.max_instances {
            if current.0 >= max {
                return Err(over("max_instances", max.into(), u64::from(current.0) + 1));
            }
        }
        if let Some(max) = q.max_total_memory_mib {
            let wanted = current.1 + u64::from(memory_mib);
            if wanted > max {
                return Err(over("max_total_memory_mib", max, wanted));
            }
        }
        match bridge {
            Some(bridge) => self.check_bridge(bridge, "network.bridge"),
            None => Ok(()),
        }
    }

    /// Checks that the caller may attach guests to `bridge`; `field` names where it was asked.
    pub fn check_bridge(&self, bridge: &str, field: &'static str) -> Result<(), AuthError> {
        if let Some(allowed) = &self.quota.bridges {
            if !allowed.iter().any(|b| b == bridge) {
                return Err(AuthError::OutOfScope(FieldError::new(
                    field,
                    format!(
                        "{bridge:?} is not among the bridges token {:?} may use ({})",
                        self.name,
                        allowed.join(", ")
                    ),
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Caller {
        Caller {
            name: "alice".into(),
            role: Role::Operator,
            prefix: Some("alice-".into()),
            quota: Quota {
                max_instances: Some(2),
                max_total_memory_mib: Some(64),
                max_instance_memory_mib: Some(32),
                bridges: Some(vec!["br0".into()]),
            },
        }
    }

    #[test]
    fn roles_are_ordered() {
        let viewer = Caller {
            role: Role::Viewer,
            ..tenant()
        };
        assert!(viewer.require(Role::Viewer, "read").is_ok());
        assert!(viewer.require(Role::Operator, "create instances").is_err());
        assert!(tenant().require(Role::Admin, "x").is_err());
        assert!(Caller::anonymous().require(Role::Admin, "x").is_ok());
    }

    #[test]
    fn prefixes_scope_names() {
        let t = tenant();
        assert!(t.sees("alice-web") && !t.sees("bob-web"));
        assert!(t.may_name("alice-1").is_ok());
        let e = t.may_name("bob-1").unwrap_err().to_string();
        assert!(e.contains("\"alice-\""), "{e}");
        assert!(Caller::anonymous().sees("anything"));
    }

    #[test]
    fn quotas_name_the_limit() {
        let t = tenant();
        assert!(t.check_quota(32, Some("br0"), (1, 32)).is_ok());
        let e = t
            .check_quota(33, Some("br0"), (0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_instance_memory_mib"), "{e}");
        let e = t
            .check_quota(8, Some("br0"), (2, 16))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_instances"), "{e}");
        let e = t
            .check_quota(32, Some("br0"), (1, 40))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_total_memory_mib is 64") && e.contains("needs 72"),
            "{e}"
        );
        let e = t
            .check_quota(8, Some("br1"), (0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("br1"), "{e}");
        assert!(t.check_quota(8, None, (0, 0)).is_ok());
    }
}

//! Roles and what they grant: WALKOFF's resources × operations catalogue (the part walkoff has
//! an API for), its six default roles with their fixed ids, and per-object access levels.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the API guards, by WALKOFF's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// The app catalogue (apps, actions, parameter schemas).
    AppApis,
    Settings,
    GlobalVariables,
    Workflows,
    /// Executions (WALKOFF's workflow status records).
    Workflowstatus,
    Roles,
    Users,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

use Operation::{Create, Delete, Execute, Read, Update};

/// Every resource with the operations the API checks on it. WALKOFF's `apps`, `umpire`,
/// `dashboards`, `scheduler` and `workflow_variables` are left out: walkoff has no API they
/// would guard, and a grant that guards nothing would mislead whoever edits a role.
/// `execute` on `global_variables` is using a global in a workflow without reading it.
pub const CATALOGUE: &[(Resource, &[Operation])] = &[
    (Resource::AppApis, &[Read]),
    (Resource::Settings, &[Read, Update]),
    (
        Resource::GlobalVariables,
        &[Create, Read, Update, Delete, Execute],
    ),
    (
        Resource::Workflows,
        &[Create, Read, Update, Delete, Execute],
    ),
    (Resource::Workflowstatus, &[Read, Delete]),
    (Resource::Roles, &[Create, Read, Update, Delete]),
    (Resource::Users, &[Create, Read, Update, Delete]),
];

impl Resource {
    pub const ALL: [Resource; 7] = [
        Resource::AppApis,
        Resource::Settings,
        Resource::GlobalVariables,
        Resource::Workflows,
        Resource::Workflowstatus,
        Resource::Roles,
        Resource::Users,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::AppApis => "app_apis",
            Resource::Settings => "settings",
            Resource::GlobalVariables => "global_variables",
            Resource::Workflows => "workflows",
            Resource::Workflowstatus => "workflowstatus",
            Resource::Roles => "roles",
            Resource::Users => "users",
        }
    }

    /// The operations the API checks on this resource.
    pub fn operations(self) -> &'static [Operation] {
        CATALOGUE
            .iter()
            .find(|(r, _)| *r == self)
            .map_or(&[], |(_, ops)| ops)
    }
}

impl Operation {
    pub const ALL: [Operation; 5] = [Create, Read, Update, Delete, Execute];

    pub fn as_str(self) -> &'static str {
        match self {
            Create => "create",
            Read => "read",
            Update => "update",
            Delete => "delete",
            Execute => "execute",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "there is no resource '{s}' (there are {})",
                    names.join(", ")
                )
            })
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "there is no operation '{s}' (there are create, read, update, delete, execute)"
                )
            })
    }
}

/// What a role allows, by resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Grants(pub BTreeMap<Resource, BTreeSet<Operation>>);

impl Grants {
    pub fn allows(&self, resource: Resource, operation: Operation) -> bool {
        self.0
            .get(&resource)
            .is_some_and(|ops| ops.contains(&operation))
    }

    /// Everything `self` or `other` allows.
    pub fn union(&mut self, other: &Grants) {
        for (resource, ops) in &other.0 {
            self.0.entry(*resource).or_default().extend(ops);
        }
    }

    /// Grants from (resource, operations) pairs as a caller writes them, each checked against
    /// the catalogue; an empty list of operations grants nothing on that resource.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Grants, String> {
        let mut grants = Grants::default();
        for (name, operations) in pairs {
            let resource: Resource = name.parse()?;
            let mut set = BTreeSet::new();
            for op in operations {
                let operation: Operation = op.parse()?;
                if !resource.operations().contains(&operation) {
                    let offered: Vec<&str> =
                        resource.operations().iter().map(|o| o.as_str()).collect();
                    return Err(format!(
                        "'{resource}' offers no '{operation}' (it offers {})",
                        offered.join(", ")
                    ));
                }
                set.insert(operation);
            }
            if grants.0.contains_key(&resource) {
                return Err(format!("'{resource}' is listed more than once"));
            }
            if !set.is_empty() {
                grants.0.insert(resource, set);
            }
        }
        Ok(grants)
    }

    fn of(pairs: &[(Resource, &[Operation])]) -> Grants {
        Grants(
            pairs
                .iter()
                .map(|(r, ops)| (*r, ops.iter().copied().collect()))
                .collect(),
        )
    }

    /// Every operation of the catalogue.
    pub fn everything() -> Grants {
        Grants::of(CATALOGUE)
    }
}

/// WALKOFF's fixed role ids: the ASCII name right-aligned in 16 zero-padded bytes.
pub const INTERNAL_USER_ROLE: &str = "00000069-6e74-6572-6e61-6c5f726f6c65";
pub const SUPER_ADMIN_ROLE: &str = "00000000-0073-6164-6d69-6e5f726f6c65";
pub const ADMIN_ROLE: &str = "00000000-0000-6164-6d69-6e5f726f6c65";
pub const APP_DEVELOPER_ROLE: &str = "00000000-6170-705f-6465-765f726f6c65";
pub const WORKFLOW_DEVELOPER_ROLE: &str = "00000000-0077-665f-6465-765f726f6c65";
pub const WORKFLOW_OPERATOR_ROLE: &str = "00000000-0000-7766-5f6f-705f726f6c65";

/// WALKOFF's fixed ids of its seeded users.
pub const SUPER_ADMIN_USER: &str = "00000000-0073-6164-6d69-6e5f75736572";
pub const ADMIN_USER: &str = "00000000-0000-6164-6d69-6e5f75736572";

/// Roles whose holders keep every right on every object, whatever its permissions say.
pub fn is_unrestricted_role(role_id: &str) -> bool {
    role_id == SUPER_ADMIN_ROLE || role_id == INTERNAL_USER_ROLE
}

/// Roles no caller may give to a user.
pub fn is_reserved_role(role_id: &str) -> bool {
    is_unrestricted_role(role_id)
}

pub struct DefaultRole {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// `internal_user` is never listed.
    pub hidden: bool,
    pub grants: Grants,
}

/// The six default roles. Where WALKOFF's defaults kept a role from doing what its description
/// promises (operators could not execute, workflow roles could not read the app catalogue,
/// developers could not use the globals they write), these grant it.
pub fn default_roles() -> Vec<DefaultRole> {
    let admin = Grants::everything();
    let developer = Grants::of(&[
        (Resource::AppApis, &[Read]),
        (Resource::Settings, &[Read]),
        (
            Resource::GlobalVariables,
            &[Create, Read, Update, Delete, Execute],
        ),
        (
            Resource::Workflows,
            &[Create, Read, Update, Delete, Execute],
        ),
        (Resource::Workflowstatus, &[Read]),
        (Resource::Roles, &[Read]),
        (Resource::Users, &[Read]),
    ]);
    let operator = Grants::of(&[
        (Resource::AppApis, &[Read]),
        (Resource::Settings, &[Read]),
        (Resource::GlobalVariables, &[Execute]),
        (Resource::Workflows, &[Read, Execute]),
        (Resource::Workflowstatus, &[Read]),
        (Resource::Roles, &[Read]),
        (Resource::Users, &[Read]),
    ]);
    vec![
        DefaultRole {
            id: INTERNAL_USER_ROLE,
            name: "internal_user",
            description: "walkoff's own processes",
            hidden: true,
            grants: admin.clone(),
        },
        DefaultRole {
            id: SUPER_ADMIN_ROLE,
            name: "super_admin",
            description: "Full access to everything, every object included; held by one account, which cannot be changed by anyone else or deleted",
            hidden: false,
            grants: admin.clone(),
        },
        DefaultRole {
            id: ADMIN_ROLE,
            name: "admin",
            description: "Full access: users, roles, settings, workflows, globals, executions",
            hidden: false,
            grants: admin,
        },
        DefaultRole {
            id: APP_DEVELOPER_ROLE,
            name: "app_developer",
            description: "Builds workflows and globals and reads the app catalogue; reads users, roles and settings",
            hidden: false,
            grants: developer.clone(),
        },
        DefaultRole {
            id: WORKFLOW_DEVELOPER_ROLE,
            name: "workflow_developer",
            description: "Creates, changes, deletes and runs workflows and globals; reads users, roles and settings",
            hidden: false,
            grants: developer,
        },
        DefaultRole {
            id: WORKFLOW_OPERATOR_ROLE,
            name: "workflow_operator",
            description: "Reads and runs the workflows it may see, uses globals without reading them",
            hidden: false,
            grants: operator,
        },
    ]
}

/// Who may see and change one object (a workflow or a global), as WALKOFF's `access_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLevel {
    /// Its creator (and super_admin).
    OnlyMe = 0,
    /// Whoever's roles grant the operation on the resource.
    Everyone = 1,
    /// The roles listed on the object (and its creator, and super_admin).
    RoleBased = 2,
}

impl AccessLevel {
    pub fn from_i64(n: i64) -> AccessLevel {
        match n {
            0 => AccessLevel::OnlyMe,
            2 => AccessLevel::RoleBased,
            _ => AccessLevel::Everyone,
        }
    }
}

/// The operations a role has on one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectOperations {
    pub read: bool,
    pub update: bool,
    pub delete: bool,
    pub execute: bool,
}

impl ObjectOperations {
    pub fn allows(&self, operation: Operation) -> bool {
        match operation {
            Read => self.read,
            Update => self.update,
            Delete => self.delete,
            Execute => self.execute,
            Create => false,
        }
    }

    pub fn from_operations(ops: &[Operation]) -> Result<ObjectOperations, String> {
        let mut out = ObjectOperations::default();
        for op in ops {
            match op {
                Read => out.read = true,
                Update => out.update = true,
                Delete => out.delete = true,
                Execute => out.execute = true,
                Create => {
                    return Err(
                        "'create' is not a permission on an object (it is a role's, on a resource)"
                            .into(),
                    )
                }
            }
        }
        Ok(out)
    }

    pub fn operations(&self) -> Vec<Operation> {
        [Read, Update, Delete, Execute]
            .into_iter()
            .filter(|op| self.allows(*op))
            .collect()
    }
}

/// Permissions of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectAccess {
    pub level: AccessLevel,
    pub creator_id: Option<String>,
    /// For role-based access: each listed role's operations.
    pub roles: BTreeMap<String, ObjectOperations>,
}

impl ObjectAccess {
    pub fn everyone(creator_id: Option<String>) -> ObjectAccess {
        ObjectAccess {
            level: AccessLevel::Everyone,
            creator_id,
            roles: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_role_ids_spell_their_names_as_walkoff_derives_them() {
        fn derive(tag: &str) -> String {
            let mut bytes = [0u8; 16];
            bytes[16 - tag.len()..].copy_from_slice(tag.as_bytes());
            uuid::Uuid::from_bytes(bytes).to_string()
        }
        assert_eq!(derive("internal_role"), INTERNAL_USER_ROLE);
        assert_eq!(derive("sadmin_role"), SUPER_ADMIN_ROLE);
        assert_eq!(derive("admin_role"), ADMIN_ROLE);
        assert_eq!(derive("app_dev_role"), APP_DEVELOPER_ROLE);
        assert_eq!(derive("wf_dev_role"), WORKFLOW_DEVELOPER_ROLE);
        assert_eq!(derive("wf_op_role"), WORKFLOW_OPERATOR_ROLE);
        assert_eq!(derive("admin_user"), ADMIN_USER);
        assert_eq!(derive("sadmin_user"), SUPER_ADMIN_USER);
    }

    #[test]
    fn grants_are_checked_against_the_catalogue() {
        let ops = vec!["read".to_string(), "update".to_string()];
        let grants = Grants::parse([("roles", ops.as_slice())]).unwrap();
        assert!(grants.allows(Resource::Roles, Update));
        assert!(!grants.allows(Resource::Roles, Delete));
        let bad = vec!["execute".to_string()];
        let error = Grants::parse([("roles", bad.as_slice())]).unwrap_err();
        assert!(error.contains("offers no 'execute'"), "{error}");
        let error = Grants::parse([("dashboards", ops.as_slice())]).unwrap_err();
        assert!(error.contains("no resource 'dashboards'"), "{error}");
    }
}

//! People who log in to the web interface.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::call::UnknownValue;
use crate::id::ManagerId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Leader,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Leader => "leader",
            Self::Manager => "manager",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "leader" => Ok(Self::Leader),
            "manager" => Ok(Self::Manager),
            other => Err(UnknownValue(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    pub username: String,
    /// An argon2 PHC string; plain passwords never reach storage.
    pub password_hash: String,
    pub role: Role,
    pub manager_id: Option<ManagerId>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub manager_id: Option<ManagerId>,
    pub created_at: DateTime<Utc>,
}

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

/// A user with the hash to check a password against; only the login path
/// asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

/// What an administrator changes about a user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserUpdate {
    pub id: i64,
    pub role: Role,
    pub manager_id: Option<ManagerId>,
    /// A new argon2 PHC string; `None` keeps the password. A new password
    /// ends the user's sessions.
    pub password_hash: Option<String>,
}

/// A login, as stored. The browser holds the token; the database only its
/// SHA-256, so a copy of the database does not let anyone in.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub token_hash: String,
    pub user_id: i64,
    /// The synchronizer token every form and htmx request must echo.
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

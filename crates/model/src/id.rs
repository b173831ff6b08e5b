//! Identifiers as types: an employee id cannot be passed where a course id
//! is expected. Each is a string underneath, stored and printed as one
//! (`serde(transparent)`), so stored data and JSON outputs are unchanged.
//! They deref to `str` so that reading one as text (a store key, a log
//! field) needs no ceremony; making one from text is explicit (`From`).

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id! {
    /// An employee's stable id in the HRIS.
    EmployeeId
}

string_id! {
    /// A course key (the LMS's course id or short name, as rules name it).
    CourseId
}

string_id! {
    /// An account's id in the LMS, as `upsert-user` returned it.
    LmsUserId
}

string_id! {
    /// A connector's name in the configuration (`[connectors.NAME]`).
    ConnectorName
}

string_id! {
    /// A link's name in the configuration (`[links.NAME]`).
    LinkName
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialise_as_plain_strings() {
        let id = EmployeeId::from("335");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"335\"");
        let back: EmployeeId = serde_json::from_str("\"335\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string(), "335");
        assert!(id == "335");
    }
}

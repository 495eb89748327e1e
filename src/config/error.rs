//! [`ConfigError`]: why a configuration was refused, naming the field by its dotted
//! path. Sections validate with paths relative to themselves; [`ConfigError::under`]
//! puts the section's own path in front as the error travels up.

use std::fmt;

/// Why a configuration was refused. `Display` gives one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration was empty.
    Empty,
    /// JSON that does not parse, or does not fit the schema (type, unknown field).
    Json {
        /// Dotted path of the field (empty for the document itself).
        field: String,
        /// What serde said.
        message: String,
    },
    /// A value that parsed but breaks a rule.
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong, with the bad value.
        message: String,
    },
}

impl ConfigError {
    /// The same error for a section found at `prefix`: `field` becomes
    /// `prefix.field` (or `prefix` for an error about the section itself).
    pub fn under(self, prefix: &str) -> ConfigError {
        let join = |field: String| {
            if field.is_empty() {
                prefix.to_string()
            } else if field.starts_with('[') {
                format!("{prefix}{field}")
            } else {
                format!("{prefix}.{field}")
            }
        };
        match self {
            ConfigError::Empty => ConfigError::Empty,
            ConfigError::Json { field, message } => ConfigError::Json {
                field: join(field),
                message,
            },
            ConfigError::Invalid { field, message } => ConfigError::Invalid {
                field: join(field),
                message,
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Empty => write!(
                f,
                "invalid configuration: configuration is empty; expected a JSON object with at least `routes`"
            ),
            ConfigError::Json { field, message } if field.is_empty() || field == "." => {
                write!(f, "invalid configuration: {message}")
            }
            ConfigError::Json { field, message } | ConfigError::Invalid { field, message } => {
                write!(f, "invalid configuration: `{field}`: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserializes `T` from a JSON value, reporting the path under `prefix`.
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        ConfigError::Json {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// A rule violation on `field`.
pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

//! What a bad setting gets: [`ConfigError`] (one setting, named by its environment variable),
//! [`ConfigErrors`] (every bad setting of one start-up) and [`Expected`] (the common reason).

use std::fmt;
use std::str::FromStr;

/// A setting that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct ConfigError {
    /// The environment variable name (the flag is its lowercase, dashed form).
    pub setting: &'static str,
    pub reason: String,
}

impl ConfigError {
    /// Parses the raw value of one setting into its type; the error names the setting.
    pub fn parse<T>(setting: &'static str, raw: &str) -> Result<T, Self>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        raw.parse().map_err(|reason: T::Err| Self { setting, reason: reason.to_string() })
    }
}

/// Every setting that cannot be used (at least one), in the order the settings are declared.
/// Displayed as `invalid SETTING: reason` for one, else `invalid settings:` and one indented
/// `SETTING: reason` line per bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub(super) Vec<ConfigError>);

impl ConfigErrors {
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The names of the bad settings.
    pub fn settings(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|error| error.setting)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => fmt::Display::fmt(one, f),
            many => {
                f.write_str("invalid settings:")?;
                for error in many {
                    write!(f, "\n  {}: {}", error.setting, error.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

/// Why a value did not parse: `expected <what>, got "<value>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {what}, got {got:?}")]
pub struct Expected {
    pub what: &'static str,
    pub got: String,
}

impl Expected {
    pub(super) fn new(what: &'static str, got: &str) -> Self {
        Self { what, got: got.to_owned() }
    }
}

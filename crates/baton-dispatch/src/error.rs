//! The crate's one error type: what is wrong with a configuration, and where.

/// A configuration the dispatcher refuses, with the line (1-based) and the field it is
/// about, such as `pools.web.backends[1].weight` or `rules[3].match.path_regex`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or not the expected shape: an unknown key, a wrong type, a missing
    /// field, a duplicated key; the message comes from the TOML parser and names the key.
    #[error("line {line}: {message}")]
    Syntax {
        /// Where the parser stopped.
        line: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A rule or `default_pool` names a pool that is not defined.
    #[error("line {line}: {field}: no pool named `{pool}`")]
    UnknownPool {
        /// Line of the reference.
        line: usize,
        /// The referring field.
        field: String,
        /// The name that was not found.
        pool: String,
    },
    /// A pool lists no back-end: every request it got would fail.
    #[error("line {line}: {field}: a pool needs at least one back-end")]
    EmptyPool {
        /// Line of the pool.
        line: usize,
        /// The pool's `backends` field.
        field: String,
    },
    /// A back-end's weight is 0; leave it out, or mark it down, instead.
    #[error("line {line}: {field}: a weight must be at least 1")]
    ZeroWeight {
        /// Line of the back-end.
        line: usize,
        /// The weight field.
        field: String,
    },
    /// The same back-end in a pool twice, the same sticky id twice in a pool, or the
    /// same rule name twice.
    #[error("line {line}: {field}: duplicate {what}")]
    Duplicate {
        /// Line of the second occurrence.
        line: usize,
        /// The field holding the second occurrence.
        field: String,
        /// What is repeated, with its value.
        what: String,
    },
    /// A regular expression that does not compile.
    #[error("line {line}: {field}: invalid regular expression: {message}")]
    BadRegex {
        /// Line of the rule.
        line: usize,
        /// The regex field.
        field: String,
        /// The regex crate's explanation.
        message: String,
    },
    /// Any other value that is out of range or at odds with its neighbours.
    #[error("line {line}: {field}: {reason}")]
    InvalidValue {
        /// Line of the value (or of the table holding it).
        line: usize,
        /// The offending field.
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl ConfigError {
    /// The 1-based line the error is about.
    pub fn line(&self) -> usize {
        match self {
            Self::Syntax { line, .. }
            | Self::UnknownPool { line, .. }
            | Self::EmptyPool { line, .. }
            | Self::ZeroWeight { line, .. }
            | Self::Duplicate { line, .. }
            | Self::BadRegex { line, .. }
            | Self::InvalidValue { line, .. } => *line,
        }
    }

    /// The same error for a configuration held as `table` of a larger file (see
    /// [`crate::Dispatcher::from_table`]): its field gains the prefix, `pools.web` becoming
    /// `dispatch.pools.web`.
    pub fn in_table(mut self, table: &str) -> Self {
        match &mut self {
            Self::Syntax { .. } => {}
            Self::UnknownPool { field, .. }
            | Self::EmptyPool { field, .. }
            | Self::ZeroWeight { field, .. }
            | Self::Duplicate { field, .. }
            | Self::BadRegex { field, .. }
            | Self::InvalidValue { field, .. } => *field = format!("{table}.{field}"),
        }
        self
    }

    /// The dotted path of the field the error is about; `None` for a syntax error (its
    /// message names the key).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Syntax { .. } => None,
            Self::UnknownPool { field, .. }
            | Self::EmptyPool { field, .. }
            | Self::ZeroWeight { field, .. }
            | Self::Duplicate { field, .. }
            | Self::BadRegex { field, .. }
            | Self::InvalidValue { field, .. } => Some(field),
        }
    }
}

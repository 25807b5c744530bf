//! A client's settings: what its startup packet asks of the server beyond user and database —
//! parameters such as `application_name`, `TimeZone` or `statement_timeout`, and `options`'
//! `-c name=value` switches. Pooled connections are made without them (whatever a startup packet
//! sets becomes the connection's reset value, which the next client would inherit) and each
//! client's settings are applied with `set_config` to whichever connection it borrows.
//!
//! In transaction mode a client may also change a setting the server reports back
//! ([`FOLLOWED`]): pgvalet reads the ParameterStatus and carries the new value with the client to
//! its next connection, instead of pinning it.

use std::cmp::Ordering;

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// ClientSettings Postgres (14 and later) reports with ParameterStatus whenever they change, which a
/// client may SET: a transaction-mode client that changes one is followed, not pinned.
pub const FOLLOWED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "IntervalStyle",
    "standard_conforming_strings",
    "TimeZone",
];

/// Whether `name` is one of [`FOLLOWED`] (setting names are case-insensitive).
pub fn is_followed(name: &str) -> bool {
    FOLLOWED.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// A client's settings, sorted by name (compared without case), one value per name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings(Vec<(String, String)>);

/// `options` that are not `-c name=value` or `--name=value` switches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command-line argument for server process: {0}")]
pub struct BadOption(pub String);

impl crate::error::ClientError for BadOption {
    fn sqlstate(&self) -> Option<&str> {
        // Postgres' own code and text for the same case.
        Some("42601")
    }
    fn kind(&self) -> &'static str {
        "protocol_error"
    }
}

impl ClientSettings {
    /// The settings in a startup packet: `options` switches first, then the other parameters,
    /// which win over a switch of the same name (as in Postgres).
    pub fn from_startup(params: &[(String, String)]) -> Result<ClientSettings, BadOption> {
        let mut settings = ClientSettings::default();
        if let Some((_, options)) = params.iter().find(|(k, _)| k == "options") {
            for (name, value) in parse_options(options)? {
                settings.set(&name, &value);
            }
        }
        for (name, value) in params {
            if !NOT_SETTINGS.contains(&name.as_str()) && !name.starts_with("_pq_.") {
                settings.set(name, value);
            }
        }
        Ok(settings)
    }

    /// Sets `name` to `value`, replacing a value of the same name in any case.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(k, _)| cmp_names(k, name)) {
            Ok(i) => self.0[i].1 = value.to_owned(),
            Err(i) => self.0.insert(i, (name.to_owned(), value.to_owned())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| cmp_names(k, name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The SQL that turns a connection set up with `self` into one set up with `want`: a
    /// `set_config` for each value that differs, a `RESET` for each name `want` lacks. Empty when
    /// nothing differs.
    pub fn change_to(&self, want: &ClientSettings) -> String {
        let mut sql = String::new();
        for (name, value) in want.iter() {
            if self.get(name) != Some(value) {
                sql += &format!(
                    "SELECT pg_catalog.set_config({}, {}, false);",
                    literal(name),
                    literal(value)
                );
            }
        }
        for (name, _) in self.iter() {
            if want.get(name).is_none() {
                sql += &format!("RESET \"{}\";", name.replace('"', "\"\""));
            }
        }
        sql
    }
}

fn cmp_names(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// `text` as a dollar-quoted string literal, with a tag the text does not contain. A literal in
/// single quotes would not do: a client may turn `standard_conforming_strings` off on the
/// connection, and a backslash in its own value would then escape the closing quote. Dollar
/// quotes have no escapes, and no multi-byte character of any client encoding ends in `$`.
fn literal(text: &str) -> String {
    let mut tag = "$pgv$".to_owned();
    let mut n = 0;
    // The literal ends at the first tag after the opening one.
    while format!("{text}{tag}").find(&tag) != Some(text.len()) {
        n += 1;
        tag = format!("$pgv{n}$");
    }
    format!("{tag}{text}{tag}")
}

/// `-c name=value`, `-cname=value` and `--name=value` switches, split as Postgres splits the
/// `options` parameter: on whitespace, a backslash taking the next character as it is. Dashes
/// in a name read as underscores.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, BadOption> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.extend(chars.next());
                in_word = true;
            }
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut pairs = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else if word == "-c" {
            words.next().ok_or_else(|| BadOption(word.clone()))?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else {
            return Err(BadOption(word));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(BadOption(assignment));
        };
        if name.is_empty() {
            return Err(BadOption(assignment));
        }
        pairs.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn startup_parameters_and_options_become_settings() {
        let s = ClientSettings::from_startup(&params(&[
            ("user", "u"),
            ("database", "d"),
            (
                "options",
                "-c statement_timeout=5s --lock-timeout=1s -csearch_path=a\\ b",
            ),
            ("application_name", "app"),
            ("_pq_.x", "y"),
            ("statement_timeout", "7s"),
        ]))
        .unwrap();
        let got: Vec<_> = s.iter().collect();
        assert_eq!(
            got,
            [
                ("application_name", "app"),
                ("lock_timeout", "1s"),
                ("search_path", "a b"),
                ("statement_timeout", "7s"),
            ],
            "sorted, a parameter beats an option of the same name"
        );
        for bad in ["-x", "-c", "-c nothing", "--=1", "plain"] {
            assert!(
                ClientSettings::from_startup(&params(&[("options", bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(
            ClientSettings::from_startup(&params(&[("options", "  ")]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn names_compare_without_case() {
        let mut s = ClientSettings::default();
        s.set("timezone", "utc");
        s.set("TimeZone", "UTC");
        assert_eq!(s.iter().count(), 1);
        assert_eq!(s.get("TIMEZONE"), Some("UTC"));
        assert!(is_followed("datestyle") && !is_followed("search_path"));
    }

    #[test]
    fn change_to_sets_what_differs_and_resets_what_is_gone() {
        let mut had = ClientSettings::default();
        had.set("TimeZone", "UTC");
        had.set("work_mem", "8MB");
        let mut want = ClientSettings::default();
        want.set("TimeZone", "UTC");
        want.set("application_name", "it's");
        assert_eq!(
            had.change_to(&want),
            "SELECT pg_catalog.set_config($pgv$application_name$pgv$, $pgv$it's$pgv$, false);RESET \"work_mem\";"
        );
        assert_eq!(want.change_to(&want), "");
    }

    #[test]
    fn literals_read_the_same_whatever_the_connection_quotes_with() {
        // With standard_conforming_strings off, 'a\' would escape its closing quote.
        assert_eq!(literal("a\\"), "$pgv$a\\$pgv$");
        assert_eq!(literal("x$pgv$y"), "$pgv1$x$pgv$y$pgv1$");
        assert_eq!(
            literal("x$pgv"),
            "$pgv1$x$pgv$pgv1$",
            "no tag where text and tag meet"
        );
        assert_eq!(literal(""), "$pgv$$pgv$");
    }
}

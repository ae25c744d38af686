//! `--redact REGEX`: the values of names that match are masked wherever
//! pydeep would show or record them — variables (dump, snapshots), dict
//! items under a matching str key and instance attributes (in every
//! rendering), objects reached through a matching name (objects graphs),
//! and `NAME=VALUE` / `--NAME VALUE` arguments of recorded command lines.
//!
//! Names are searched, not fully matched, case-insensitively by default:
//! `db_password`, `API_TOKEN` and `self.secret_key` all match the default.
//! Redaction hides values only; names, types and addresses stay.

use regex::Regex;

/// What masked values are replaced by.
pub const REDACTED: &str = "<redacted>";

/// The default `--redact`: names that usually hold credentials.
///
/// `key` alone is not one: `primary_key=`, `_sort_key`, a `key=`
/// argument and a dict loop's `key` were masked on real programs, which
/// hid what a reader came to see. A key is masked when the name says
/// which kind of credential it is (`api_key`, `SecretKey`, `private-key`,
/// `aws_access_key`, `ssh_key`...). Widen it with `--redact` when an
/// application names its secrets otherwise.
pub const DEFAULT_PATTERN: &str = r"(?i)passw(or)?d|passphrase|secret|token|credential|(api|private|access|auth|signing|encryption|client|aws|ssh|session|master|license|jwt|hmac|fernet)[_-]?key";

/// Compiles a `--redact` pattern into the process-wide regex the readers
/// share (leaked once: it lives as long as the command), or `None` for
/// `--no-redact`.
pub fn compile(pattern: &str, disabled: bool) -> Result<Option<&'static Regex>, regex::Error> {
    if disabled {
        return Ok(None);
    }
    Ok(Some(Box::leak(Box::new(Regex::new(pattern)?))))
}

/// True if values named `name` are to be masked.
pub fn matches(redact: Option<&Regex>, name: &str) -> bool {
    redact.is_some_and(|regex| regex.is_match(name))
}

/// The name an object-graph edge label stands for: `.attr` and `['key']`
/// name something; `[3]`, `key`, `item` and `cell_contents` are structure.
pub fn edge_name(label: &str) -> Option<&str> {
    if let Some(attribute) = label.strip_prefix('.') {
        return Some(attribute);
    }
    if let Some(inner) = label.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        let quoted = inner
            .strip_prefix('\'')
            .and_then(|i| i.strip_suffix('\''))
            .or_else(|| inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')));
        return quoted;
    }
    match label {
        "key" | "item" | "cell_contents" => None,
        name => Some(name),
    }
}

/// `argv` with the values of matching `NAME=VALUE` and `--NAME VALUE`
/// arguments masked (a password passed on a command line would otherwise
/// be stored in the recording's header).
pub fn command_line(redact: Option<&Regex>, argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut mask_next = false;
    for argument in argv {
        if std::mem::take(&mut mask_next) {
            out.push(REDACTED.to_string());
            continue;
        }
        if let Some((name, _)) = argument.split_once('=') {
            if matches(redact, name) {
                out.push(format!("{name}={REDACTED}"));
                continue;
            }
        } else if argument.starts_with('-') && matches(redact, argument.trim_start_matches('-')) {
            mask_next = true;
        }
        out.push(argument.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_masks_credential_names_in_any_case() {
        let regex = compile(DEFAULT_PATTERN, false).unwrap();
        for name in [
            "password",
            "DB_PASSWORD",
            "passwd",
            "api_token",
            "SecretKey",
            "aws_key",
        ] {
            assert!(matches(regex, name), "{name}");
        }
        for name in [
            "private_key",
            "x-api-key",
            "ApiKey",
            "ssh_key",
            "aws_access_key",
        ] {
            assert!(matches(regex, name), "{name}");
        }
        // Keys that are not credentials (issue #16 item 6).
        for name in [
            "user",
            "count",
            "path",
            "key",
            "primary_key",
            "_sort_key",
            "keys",
            "monkey",
        ] {
            assert!(!matches(regex, name), "{name}");
        }
        assert!(!matches(
            compile(DEFAULT_PATTERN, true).unwrap(),
            "password"
        ));
    }

    #[test]
    fn command_lines_keep_names_and_lose_secret_values() {
        let regex = compile(DEFAULT_PATTERN, false).unwrap();
        let argv: Vec<String> = [
            "app.py",
            "--token",
            "abc",
            "PASSWORD=hunter2",
            "--user",
            "bob",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            command_line(regex, &argv),
            [
                "app.py",
                "--token",
                REDACTED,
                "PASSWORD=<redacted>",
                "--user",
                "bob"
            ]
        );
        assert_eq!(command_line(None, &argv), argv);
    }

    #[test]
    fn edge_labels_name_attributes_and_str_keys_only() {
        assert_eq!(edge_name(".password"), Some("password"));
        assert_eq!(edge_name("['api_token']"), Some("api_token"));
        assert_eq!(edge_name("[3]"), None);
        assert_eq!(edge_name("key"), None);
    }
}

//! Secrets from files, as Docker Swarm and Kubernetes hand them to a container
//! (`/run/secrets/NAME`): for each setting below, `NAME_FILE` names a file holding it. Passwords of
//! the database and of Redis go into their URLs, so the URL itself holds none.

use std::path::Path;

/// (file variable, variable it sets): the whole file, less a final line break.
const WHOLE: [(&str, &str); 2] = [
    ("WALKOFF_ADMIN_PASSWORD_FILE", "WALKOFF_ADMIN_PASSWORD"),
    (
        "WALKOFF_SUPER_ADMIN_PASSWORD_FILE",
        "WALKOFF_SUPER_ADMIN_PASSWORD",
    ),
];

/// (file variable, URL variable whose password it sets).
const PASSWORDS: [(&str, &str); 2] = [
    ("WALKOFF_DATABASE_PASSWORD_FILE", "WALKOFF_DATABASE"),
    ("WALKOFF_REDIS_PASSWORD_FILE", "WALKOFF_REDIS"),
];

fn read(variable: &str, path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(Path::new(path))
        .map_err(|e| format!("{variable}: cannot read {path}: {e}"))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(format!("{variable}: {path} is empty"));
    }
    Ok(text.to_string())
}

/// `url` with `password` in it (percent-encoded as a URL's user information must be).
pub fn with_password(variable: &str, url: &str, password: &str) -> Result<String, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("{variable}: not a URL ({e})"))?;
    if parsed.cannot_be_a_base() || parsed.host().is_none() {
        return Err(format!(
            "{variable}: {} URLs take no password",
            parsed.scheme()
        ));
    }
    parsed
        .set_password(Some(password))
        .map_err(|()| format!("{variable}: this URL cannot hold a password"))?;
    Ok(parsed.into())
}

/// Sets each variable from its `_FILE` (before the command line is read, which takes them from
/// the environment). A `_FILE` that cannot be read, or a password without a URL to go into, is an
/// error naming the variable.
pub fn load_from_files() -> Result<(), String> {
    for (file, variable) in WHOLE {
        if let Ok(path) = std::env::var(file) {
            let value = read(file, &path)?;
            std::env::set_var(variable, value);
        }
    }
    for (file, variable) in PASSWORDS {
        if let Ok(path) = std::env::var(file) {
            let password = read(file, &path)?;
            let url = std::env::var(variable).map_err(|_| {
                format!("{file} is set but {variable} (the URL it goes into) is not")
            })?;
            std::env::set_var(variable, with_password(variable, &url, &password)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_password;

    #[test]
    fn a_password_goes_into_the_url_encoded() {
        assert_eq!(
            with_password(
                "WALKOFF_DATABASE",
                "postgres://walkoff@127.0.0.1:5432/walkoff",
                "p@ss/w:rd"
            )
            .unwrap(),
            "postgres://walkoff:p%40ss%2Fw%3Ard@127.0.0.1:5432/walkoff"
        );
        assert_eq!(
            with_password("WALKOFF_REDIS", "redis://127.0.0.1:6379", "secret").unwrap(),
            "redis://:secret@127.0.0.1:6379"
        );
        // One already there is replaced.
        assert_eq!(
            with_password("WALKOFF_REDIS", "redis://:old@127.0.0.1:6379/0", "new").unwrap(),
            "redis://:new@127.0.0.1:6379/0"
        );
    }

    #[test]
    fn a_url_that_cannot_hold_one_is_refused_by_name() {
        assert_eq!(
            with_password("WALKOFF_DATABASE", "sqlite:///var/lib/walkoff/db", "x").unwrap_err(),
            "WALKOFF_DATABASE: sqlite URLs take no password"
        );
        assert!(with_password("WALKOFF_REDIS", "not a url", "x")
            .unwrap_err()
            .starts_with("WALKOFF_REDIS: not a URL"));
    }
}

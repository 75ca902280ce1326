//! Where a secret comes from: an environment variable (`…_env`) or a file (`…_file`, as
//! Kubernetes and Docker mount them), never the configuration text itself. Errors name the key and
//! the variable or path, never a value.

use std::path::{Path, PathBuf};

/// One secret's two possible sources, as written under `key` (e.g. `upstreams.openai.api_key`).
pub(crate) struct Source<'a> {
    /// The key without its `_env` / `_file` suffix.
    pub key: &'a str,
    /// The environment variable named by `<key>_env`.
    pub env_var: Option<&'a str>,
    /// The path given by `<key>_file`.
    pub file: Option<&'a str>,
    /// What leaving the key out would mean, for the error when the variable is unset.
    pub without: &'a str,
}

impl Source<'_> {
    /// The secret's text (trimmed), `None` when neither source is configured, or the error to
    /// report as `(key, message)`. A relative path is read from the configuration file's directory.
    pub(crate) fn read(
        &self,
        config_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, (String, String)> {
        let key = self.key;
        match (self.env_var, self.file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err((
                format!("{key}_file"),
                format!("both {key}_env and {key}_file are set; keep one"),
            )),
            (Some(var), None) => match env(var) {
                Some(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
                _ => Err((
                    format!("{key}_env"),
                    format!(
                        "environment variable `{var}` is not set or empty; export it, or remove {}_env {}",
                        key.rsplit('.').next().unwrap_or(key),
                        self.without
                    ),
                )),
            },
            (None, Some(file)) => {
                let path = resolve(config_dir, file);
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
                    Ok(_) => Err((
                        format!("{key}_file"),
                        format!("`{}` is empty", path.display()),
                    )),
                    Err(error) => Err((
                        format!("{key}_file"),
                        format!("cannot read `{}`: {error}", path.display()),
                    )),
                }
            }
        }
    }
}

/// `file` as written, or under `config_dir` when relative.
fn resolve(config_dir: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_owned()
    } else {
        config_dir.join(path)
    }
}

/// Keys from a list: separated by commas or new lines; blank entries and `#` comment lines are
/// skipped.
pub(crate) fn key_list(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

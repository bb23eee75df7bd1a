//! Secrets: how they are written in `rules.yaml` and how they are kept.
//!
//! A secret is written as `${env:NAME}`, `${file:/path}` or
//! `${credential:NAME}` (systemd `LoadCredential=`, read from
//! `$CREDENTIALS_DIRECTORY`), or literally (which `vipd check` warns about).
//! Once resolved it lives in a [`Secret`], whose `Debug` and `Display` print
//! a mask, which has no `Serialize`, and whose value is reached only through
//! [`Secret::expose`]: grep for that call to audit every use.

use std::path::{Path, PathBuf};

pub use crate::model::Secret;

/// Where a secret value comes from, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `${env:NAME}`
    Env(String),
    /// `${file:/path}` (relative paths resolve against the config's folder).
    File(PathBuf),
    /// `${credential:NAME}`: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// Written in the file itself.
    Literal,
}

impl SecretSource {
    /// Recognises the `${kind:arg}` forms; anything else is a literal.
    pub fn of(raw: &str) -> Result<SecretSource, String> {
        let Some(inner) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
            return Ok(SecretSource::Literal);
        };
        let (kind, arg) = inner.split_once(':').ok_or_else(|| {
            format!("`{raw}`: expected ${{env:NAME}}, ${{file:PATH}} or ${{credential:NAME}}")
        })?;
        if arg.is_empty() {
            return Err(format!("`{raw}`: the {kind} reference names nothing"));
        }
        match kind {
            "env" => Ok(SecretSource::Env(arg.to_owned())),
            "file" => Ok(SecretSource::File(PathBuf::from(arg))),
            "credential" => {
                if arg.contains('/') {
                    return Err(format!("`{raw}`: a credential name cannot contain '/'"));
                }
                Ok(SecretSource::Credential(arg.to_owned()))
            }
            other => Err(format!(
                "`{raw}`: unknown secret source `{other}` (expected env, file or credential)"
            )),
        }
    }
}

/// Why a secret could not be resolved. Names the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The reference syntax is wrong.
    #[error("{0}")]
    Syntax(String),
    /// `${env:NAME}` is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// `${file:PATH}` cannot be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `${credential:NAME}` missing from `$CREDENTIALS_DIRECTORY`.
    #[error("credential {name} not found: {why}")]
    Credential { name: String, why: String },
    /// `${credential:NAME}` outside the service (`$CREDENTIALS_DIRECTORY`
    /// unset) and not readable beside the configuration either: what an
    /// operator's shell sees. Commands that do not use the secret go on.
    #[error("credential {name} cannot be read here: {why}")]
    Outside { name: String, why: String },
}

/// Resolves a configured value to a [`Secret`]. `base` is the folder of the
/// configuration file, for relative `${file:}` paths. Files keep their
/// content but lose one trailing newline (what `echo > file` adds).
pub fn resolve(raw: &str, base: &Path) -> Result<(Secret, SecretSource), SecretError> {
    let source = SecretSource::of(raw).map_err(SecretError::Syntax)?;
    let value = match &source {
        SecretSource::Literal => raw.to_owned(),
        SecretSource::Env(name) => {
            std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
        }
        SecretSource::File(path) => {
            let path = base.join(path);
            read_trimmed(&path).map_err(|source| SecretError::File { path, source })?
        }
        SecretSource::Credential(name) => credential(name, base)?,
    };
    Ok((Secret::new(value), source))
}

/// `${credential:NAME}`. Under systemd: `$CREDENTIALS_DIRECTORY/NAME`, or
/// `vipd_NAME` (the unit loads the whole `/etc/vipd/credentials` folder
/// with `LoadCredential=vipd:…`, which prefixes each file's name). Outside
/// it (an operator's shell): `credentials/NAME` beside the configuration,
/// where the install steps keep them (readable by root).
fn credential(name: &str, base: &Path) -> Result<String, SecretError> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => {
            let dir = Path::new(&dir);
            let path = dir.join(name);
            match read_trimmed(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    read_trimmed(&dir.join(format!("vipd_{name}"))).map_err(|_| {
                        SecretError::Credential {
                            name: name.to_owned(),
                            why: format!(
                                "neither {} nor vipd_{name} beside it exists (add it to /etc/vipd/credentials/, or a LoadCredential= line to the unit)",
                                path.display()
                            ),
                        }
                    })
                }
                Err(e) => Err(SecretError::Credential {
                    name: name.to_owned(),
                    why: format!("cannot read {}: {e}", path.display()),
                }),
                Ok(v) => Ok(v),
            }
        }
        None => {
            let path = base.join("credentials").join(name);
            read_trimmed(&path).map_err(|e| SecretError::Outside {
                name: name.to_owned(),
                why: format!(
                    "$CREDENTIALS_DIRECTORY is not set (only the service gets it) and {}: {e}",
                    path.display()
                ),
            })
        }
    }
}

/// The largest secret file read, in bytes: a secret is a key or a token.
const MAX_SECRET_FILE: u64 = 64 << 10;

/// Reads a secret file. Only a regular file of at most
/// [`MAX_SECRET_FILE`] bytes: `${file:/dev/zero}` or a FIFO must not hang a
/// reload or `vipd check`.
fn read_trimmed(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut s = String::new();
    file.take(MAX_SECRET_FILE + 1).read_to_string(&mut s)?;
    if s.len() as u64 > MAX_SECRET_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_SECRET_FILE} bytes; a secret is a key or a token"),
        ));
    }
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 70_000]).unwrap();
        let e = resolve("${file:big}", dir.path()).unwrap_err().to_string();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        // A device never ends: read to its end, it would fill memory.
        let e = resolve("${file:/dev/zero}", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::write(dir.path().join("ok"), "s3cret\n").unwrap();
        assert_eq!(
            resolve("${file:ok}", dir.path()).unwrap().0.expose(),
            "s3cret"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-distinctive");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2-distinctive");
    }

    #[test]
    fn sources_are_recognised() {
        assert_eq!(SecretSource::of("abc"), Ok(SecretSource::Literal));
        assert_eq!(
            SecretSource::of("${env:X}"),
            Ok(SecretSource::Env("X".into()))
        );
        assert_eq!(
            SecretSource::of("${credential:wapi}"),
            Ok(SecretSource::Credential("wapi".into()))
        );
        assert!(SecretSource::of("${vault:x}").is_err());
        assert!(SecretSource::of("${env:}").is_err());
        assert!(SecretSource::of("${credential:../x}").is_err());
    }

    #[test]
    fn file_secrets_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "value\n").unwrap();
        let (secret, _) = resolve("${file:s}", dir.path()).unwrap();
        assert_eq!(secret.expose(), "value");
        let err = resolve("${file:missing}", dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

//! The configuration file a command reads, and what the command line
//! says over it (`--state-dir`): passed to each command rather than kept
//! in a global, so that a test can run two commands with two state
//! folders in one process.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigErrors};

/// `--config FILE` with the command line's `--state-dir`.
#[derive(Debug, Clone)]
pub(crate) struct ConfigFile {
    path: PathBuf,
    state_dir: Option<PathBuf>,
}

impl ConfigFile {
    pub fn new(path: PathBuf, state_dir: Option<PathBuf>) -> ConfigFile {
        ConfigFile { path, state_dir }
    }

    /// The file's path, for messages and for watching it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`Config::load`], `--state-dir` applied.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        Config::load(&self.path).map(|c| self.over(c))
    }

    /// [`Config::load_outside`], `--state-dir` applied.
    pub(crate) fn load_outside(&self) -> Result<Config, ConfigErrors> {
        Config::load_outside(&self.path).map(|c| self.over(c))
    }

    fn over(&self, mut config: Config) -> Config {
        if let Some(dir) = &self.state_dir {
            config.set_state_dir(dir.clone());
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StateDirFrom;

    #[test]
    fn the_command_lines_state_folder_wins_over_the_files() {
        if std::env::var_os("STATE_DIRECTORY").is_some() {
            return;
        }
        let rules = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml"));
        let plain = ConfigFile::new(rules.clone(), None).load_outside().unwrap();
        assert_eq!(plain.daemon.state_dir_from, StateDirFrom::File);
        assert_eq!(
            plain.daemon.state_dir,
            rules.parent().unwrap().join("state")
        );
        let given = ConfigFile::new(rules, Some("/elsewhere".into()))
            .load_outside()
            .unwrap();
        assert_eq!(given.daemon.state_dir_from, StateDirFrom::CommandLine);
        assert_eq!(given.daemon.state_dir, Path::new("/elsewhere"));
    }
}

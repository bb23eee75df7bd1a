//! Several `vipd run` nodes on one PostgreSQL ledger, beside a [`Stack`]'s
//! sandbox and configuration: each node has the stack's configuration
//! with its own state folder (for `daemon.json`) and `daemon.store` set
//! to the database, its URL passed as `${env:VIPD_PG_URL}`.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use super::stack::{Stack, await_ready};
use super::vipd;

pub struct Node {
    pub name: String,
    config: PathBuf,
    state: PathBuf,
    log: PathBuf,
    url: String,
    child: Option<Child>,
    pub admin: String,
    pub callbacks: String,
    http: reqwest::Client,
}

impl Node {
    /// Node `name` of `stack`'s configuration on the database at `url`,
    /// with leases of `lease` (e.g. `3s`). Not started.
    pub fn new(stack: &Stack, name: &str, url: &str, lease: &str) -> Node {
        let dir = stack.dir.path();
        let text = std::fs::read_to_string(&stack.config).unwrap();
        let from = "  state_dir: ./state\n";
        assert!(text.contains(from));
        let text = text.replace(
            from,
            &format!(
                "  state_dir: ./state-{name}\n  store: {{ kind: postgres, url: \"${{env:VIPD_PG_URL}}\", node: {name}, lease: {lease}, pool_size: 8 }}\n"
            ),
        );
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, text).unwrap();
        Node {
            name: name.to_owned(),
            config,
            state: dir.join(format!("state-{name}")),
            log: dir.join(format!("{name}.log")),
            url: url.to_owned(),
            child: None,
            admin: String::new(),
            callbacks: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// Starts `vipd run` and waits until its admin API answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let _ = std::fs::remove_file(self.state.join("daemon.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = vipd()
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("VIPD_LOG", "info,vipd=debug")
            .env("VIPD_PG_URL", &self.url)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        (self.admin, self.callbacks) = await_ready(&self.http, &self.state, &self.log).await;
    }

    /// `kill -9`: no shutdown, no lease given back.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its exit code if it has exited by itself.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status.code())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The command line's shape (clap derive): every command and flag, each
//! with its help.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::logging;
use crate::ledger::OrderState;

#[derive(Debug, Parser)]
#[command(name = "vipd", version, about = "Keeps paid memberships from lapsing.")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    pub(super) log_format: logging::Format,
    /// The daemon's state folder, for commands run beside it (status,
    /// orders, plan, recharge, store); wins over $STATE_DIRECTORY and the
    /// configuration's state_dir.
    #[arg(long, global = true, env = "VIPD_STATE_DIR")]
    pub(super) state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Run the daemon in the foreground.
    Run {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// Decide and log, never pay.
        #[arg(long)]
        dry_run: bool,
        /// Start on a store that fails its integrity check, as it is:
        /// every new order is held until `vipd store release`.
        #[arg(long)]
        accept_damaged_store: bool,
    },
    /// The state store: verify it, back it up, restore a backup, release
    /// held orders.
    Store {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Validate the configuration; exit 0 if valid, 78 if not.
    Check {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// Report as text or as one JSON object.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Fail on a `${credential:}` that cannot be read here (outside the
        /// service it is a warning: only the service is handed them).
        #[arg(long)]
        strict: bool,
    },
    /// Per account and rule: expiry, next check, last order, spend.
    Status {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The order ledger; `orders resolve KEY --as S` settles an open order,
    /// `orders approve|decline KEY --reason TEXT` answers one awaiting
    /// approval.
    Orders {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml", global = true)]
        config: PathBuf,
        /// Only orders in this state.
        #[arg(long)]
        state: Option<OrderState>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<OrdersAction>,
    },
    /// The renewals the known ends bring over the next days, and their
    /// spend per day, week and budget, against each cap: which a cap or a
    /// paused provider would block, and when. Pays nothing, writes
    /// nothing.
    Forecast {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// How far ahead.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        /// Print JSON instead of text (as `GET /api/forecast` answers).
        #[arg(long)]
        json: bool,
    },
    /// What the daemon would do for each account and rule now (or at
    /// TIME), and why. Pays nothing, writes nothing.
    Plan {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Unix seconds or RFC 3339 (`2026-12-01T00:00:00Z`).
        #[arg(long)]
        at: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The story of one order, or of an account's latest orders: the
    /// decision and its inputs, every transition and why, each request and
    /// what became of it, verification, and the events that named it.
    #[command(
        after_help = "Examples:\n  vipd explain alice            an account's latest 5 orders\n  vipd explain 0b1e3c91         one order (a unique key prefix)\n  vipd explain alice --json     the same as JSON (GET /api/accounts/alice/trace)"
    )]
    Explain {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// An account's name, or an order key (a unique prefix is enough).
        what: String,
        /// How many of an account's latest orders.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One manual renewal, through the same ledger and guards. A membership
    /// that is not due is refused (exit 1, saying when it will be) unless
    /// --ahead.
    Recharge {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// The account to renew.
        #[arg(long)]
        account: String,
        /// The product to buy (it must extend a membership).
        #[arg(long)]
        product: String,
        /// Decide and say what would be paid; pay nothing.
        #[arg(long)]
        dry_run: bool,
        /// Pay a membership that is not due yet: at most one period (the
        /// product's adds) before it would be due.
        #[arg(long)]
        ahead: bool,
        /// Why (recorded in the order's history with who asked).
        #[arg(long)]
        reason: String,
    },
    /// Print the signature of KEY=VALUE parameters.
    Sign {
        /// File holding the secret (one trailing newline is ignored).
        #[arg(long, conflicts_with = "secret", required_unless_present = "secret")]
        secret_file: Option<PathBuf>,
        /// The secret itself (visible to other users in `ps`; prefer --secret-file).
        #[arg(long)]
        secret: Option<String>,
        /// md5: the vendor's MD5 signature; hash: the secret itself.
        #[arg(long, value_enum, default_value_t = ModeArg::Md5)]
        mode: ModeArg,
        /// Parameters as KEY=VALUE; values are signed raw.
        #[arg(required = true, value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// One read of an account's memberships.
    VipInfo {
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
        /// The account to read.
        #[arg(long)]
        account: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Read from this URL instead of the configured one (e.g. a running
        /// `vipd sandbox`).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Print the JSON Schema of rules.yaml (or, with --tests, of test
    /// files).
    Schema {
        /// The schema of `vipd test` files instead.
        #[arg(long)]
        tests: bool,
    },
    /// Run test files on simulated time: the real engine and plugins, an
    /// in-memory ledger and the in-process sandbox, nothing sent anywhere.
    /// Exit 0 when every test passed, 1 when one failed, 78 when a file
    /// (or a plugin it loads) is invalid.
    #[command(
        after_help = "Examples:\n  vipd test examples/tests                 every *.test.yaml under the folder\n  vipd test renewals.test.yaml --junit out.xml\n  vipd schema --tests > vipd-test.schema.json"
    )]
    Test {
        /// Test files, or folders of `*.test.yaml` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also write the results as JUnit XML here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Print the LuaLS `---@meta` file of the plugin API (save it as
    /// `scripts/types/vipd.d.lua`, as this repository does; plugins load
    /// from `*.lua` in scripts_dir, never from `*.d.lua`).
    LuaTypes,
    /// Print a shell completion script (`vipd completions bash >
    /// /etc/bash_completion.d/vipd`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `vipd man | man -l -`).
    Man,
    /// Serve the simulated upstream.
    Sandbox {
        /// Where to listen (port 0: a free one, printed first).
        #[arg(long, default_value = "127.0.0.1:9620")]
        listen: SocketAddr,
        /// The configuration file.
        #[arg(long, env = "VIPD_CONFIG", default_value = "rules.yaml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum OrdersAction {
    /// Settle a pending or unknown order on an operator's word.
    Resolve {
        /// The order key (a unique prefix is enough).
        key: String,
        /// What happened: succeeded (it was paid) or failed (it was not).
        #[arg(long = "as", value_parser = ["succeeded", "failed"])]
        as_state: String,
        /// Why (recorded in the order's history with who resolved it).
        #[arg(long)]
        reason: String,
    },
    /// Approve an order awaiting approval: it is paid at its pair's next
    /// check (at once when the daemon runs), at the price it shows.
    Approve {
        /// The order key (a unique prefix is enough).
        key: String,
        /// Why (recorded in the order's history with who approved).
        #[arg(long)]
        reason: String,
    },
    /// Decline an order awaiting approval: not paid, its money back in
    /// the budget; its rule does not pay that period.
    Decline {
        /// The order key (a unique prefix is enough).
        key: String,
        /// Why (recorded in the order's history with who declined).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum StoreAction {
    /// Check the store against its seal and decode every order (the
    /// daemon must be stopped); exit 0 if sound, 1 if damaged.
    Verify,
    /// Write a backup of the ledger to FILE (from the running daemon, or
    /// from the store when none runs).
    Backup {
        /// Where to write the backup (atomically).
        file: PathBuf,
    },
    /// Make a new store from a backup (the daemon must be stopped and the
    /// old store moved aside). Every new order is then held until released.
    Restore {
        /// The backup to restore.
        file: PathBuf,
        /// Why (recorded in the restored store's event log with who).
        #[arg(long)]
        reason: String,
    },
    /// Copy a single node's sled store (in `state_dir`, the daemon
    /// stopped) into the empty PostgreSQL ledger `daemon.store` names:
    /// orders, budgets, events, records, plugin values. Once, when moving
    /// to several nodes.
    Copy {
        /// The store to copy from.
        #[arg(long, value_enum)]
        from: StoreKindArg,
        /// The store to copy to.
        #[arg(long, value_enum)]
        to: StoreKindArg,
    },
    /// Release held orders, for one account or all of them.
    Release {
        /// Release this account's held orders.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        account: Option<String>,
        /// Release every held order.
        #[arg(long)]
        all: bool,
        /// Why, e.g. what was checked in the vendor's order list (recorded
        /// in the event log with who).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum StoreKindArg {
    Sled,
    Postgres,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ModeArg {
    Md5,
    Hash,
}

//! Per-call limits for Lua: an instruction budget, a wall-clock deadline,
//! and (per state) a memory cap.
//!
//! One Lua state runs many handler calls, interleaved at their awaits. The
//! VM hook is global to the state (so coroutines a plugin creates are
//! counted too), and the call it charges is found through a thread-local:
//! Lua code only runs inside a `poll` of its call's future, on the thread
//! doing the poll, so [`Limited`] installs that call's [`Budget`] for the
//! length of each poll. The hook fires every [`STEP`] instructions.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, VmState};

/// Instructions between two hook calls: small enough to stop a runaway
/// loop within microseconds, large enough to cost nothing measurable.
pub(crate) const STEP: u32 = 1000;

/// Which limit a call passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Instructions,
    Time,
    Memory,
}

impl Limit {
    /// The name used in errors and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Instructions => "instruction",
            Limit::Time => "time",
            Limit::Memory => "memory",
        }
    }
}

/// What one call may still spend.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    timeout: Duration,
    instructions: u64,
    left: AtomicI64,
    /// 0 = none, else `Limit as u8 + 1`.
    hit: AtomicU8,
    /// `script.lua:LINE` where the hook stopped the call.
    at: std::sync::Mutex<Option<String>>,
    /// Where the hook last saw Lua code run (script, line): a memory limit
    /// is raised by the allocator, which names no line.
    seen: std::sync::Mutex<Option<(String, usize)>>,
}

impl Budget {
    /// A fresh budget starting now.
    pub fn new(instructions: u64, timeout: Duration) -> Arc<Budget> {
        Arc::new(Budget {
            deadline: Instant::now() + timeout,
            timeout,
            instructions,
            left: AtomicI64::new(instructions.min(i64::MAX as u64) as i64),
            hit: AtomicU8::new(0),
            at: std::sync::Mutex::new(None),
            seen: std::sync::Mutex::new(None),
        })
    }

    /// The limit this call passed, if any.
    pub(crate) fn hit(&self) -> Option<Limit> {
        match self.hit.load(Ordering::Relaxed) {
            1 => Some(Limit::Instructions),
            2 => Some(Limit::Time),
            3 => Some(Limit::Memory),
            _ => None,
        }
    }

    /// Records that `limit` was passed (the first one wins).
    pub fn mark(&self, limit: Limit) {
        let code = match limit {
            Limit::Instructions => 1,
            Limit::Time => 2,
            Limit::Memory => 3,
        };
        let _ = self
            .hit
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The error message for `limit`.
    pub fn message(&self, limit: Limit, memory: usize) -> String {
        match limit {
            Limit::Instructions => format!(
                "instruction limit exceeded: more than {} Lua instructions in one call (plugins.instructions)",
                self.instructions
            ),
            Limit::Time => format!(
                "time limit exceeded: the call ran longer than {:?} (plugins.timeout)",
                self.timeout
            ),
            Limit::Memory => format!(
                "memory limit exceeded: the Lua state may use {} MiB (plugins.memory_mb)",
                memory >> 20
            ),
        }
    }

    /// `script.lua:LINE` where the hook stopped the call, if it did.
    pub(crate) fn stopped_at(&self) -> Option<String> {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `script.lua:LINE` where the hook last saw this call's Lua run (at
    /// most `STEP` instructions before any point), if it ran that long.
    pub(crate) fn last_seen(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(src, line)| format!("{src}:{line}"))
    }

    /// Notes where Lua runs; allocates only when the script changes.
    fn note(&self, debug: &mlua::Debug) {
        let line = debug.current_line().unwrap_or(0);
        let source = debug.source();
        let Some(src) = source.short_src else { return };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *seen {
            Some((s, l)) if *s == *src => *l = line,
            other => *other = Some((src.into_owned(), line)),
        }
    }

    /// Charges one hook step; an error stops the running Lua code.
    fn charge(&self, debug: &mlua::Debug) -> mlua::Result<VmState> {
        self.note(debug);
        let left = self.left.fetch_sub(STEP as i64, Ordering::Relaxed) - STEP as i64;
        // Once passed, every later step fails too, so a `pcall` around the
        // runaway code cannot swallow the limit and carry on.
        let limit = if left < 0 {
            Limit::Instructions
        } else if Instant::now() >= self.deadline {
            Limit::Time
        } else {
            return Ok(VmState::Continue);
        };
        self.mark(limit);
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_none() {
            let src = debug.source().short_src.map(|s| s.into_owned());
            *at = Some(format!(
                "{}:{}",
                src.unwrap_or_else(|| "?".into()),
                debug.current_line().unwrap_or(0)
            ));
        }
        Err(mlua::Error::RuntimeError(self.message(limit, 0)))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Budget>>> = const { RefCell::new(None) };
}

/// Installs the hook that charges the current call. Call once per state,
/// before any thread is created.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(STEP),
        |_lua, debug| {
            CURRENT.with(|c| match &*c.borrow() {
                Some(budget) => budget.charge(debug),
                // Lua never runs outside a limited call; if it somehow
                // does, it is not stopped here (but the state's memory
                // cap still holds).
                None => Ok(VmState::Continue),
            })
        },
    )
}

/// Whether the call running on this thread has passed a limit.
pub(crate) fn current_limit_hit() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|b| b.hit().is_some()))
}

/// Runs `f` with `budget` charged for any Lua it runs (plugin loading).
pub fn with_budget<T>(budget: &Arc<Budget>, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|c| c.replace(Some(budget.clone())));
    let out = f();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    out
}

/// A future whose Lua code is charged to `budget`.
pub(crate) struct Limited<F> {
    budget: Arc<Budget>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Limited<F> {
    /// Charges `inner`'s Lua to `budget`.
    pub fn new(budget: Arc<Budget>, inner: F) -> Self {
        Limited {
            budget,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for Limited<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let budget = this.budget.clone();
        with_budget(&budget, || this.inner.as_mut().poll(cx))
    }
}

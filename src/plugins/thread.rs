//! The Lua thread: one per generation, where every handler and job runs;
//! the daemon queues work to it and waits (bounded) for answers.

use super::*;

impl Plugins {
    /// Starts the Lua thread and the `vipd.every` jobs. Until this runs
    /// (and in `vipd check`, where it never does) nothing is delivered.
    /// Under `vipd test` the same work runs as a task on the current
    /// runtime (see [`Host::simulated`]).
    pub fn start(self: &Arc<Self>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<LuaTask>();
        if self.queue.set(tx).is_err() {
            return;
        }
        if self.host.simulated.is_some() {
            if let Some(main) = &self.host.main {
                main.spawn(self.clone().serve(rx));
                return;
            }
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("vipd-lua".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(me.serve(rx)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the Lua thread; plugins are not run");
                        me.finished.cancel();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the Lua thread; plugins are not run");
            self.finished.cancel();
        }
    }

    /// The Lua thread's work: jobs, and each queued task, until the
    /// generation retires; then what was queued before, then `finished`.
    async fn serve(self: Arc<Self>, mut rx: tokio::sync::mpsc::UnboundedReceiver<LuaTask>) {
        let tasks = TaskTracker::new();
        self.spawn_jobs(&tasks);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                task = rx.recv() => match task {
                    Some(task) => { tasks.spawn(task()); }
                    None => break,
                },
            }
        }
        // Work queued before the stop still runs (each call is bounded by
        // the time limit).
        while let Ok(task) = rx.try_recv() {
            tasks.spawn(task());
        }
        tasks.close();
        tasks.wait().await;
        self.finished.cancel();
    }

    /// Queues `f` on the Lua thread.
    fn on_lua_thread<F>(self: &Arc<Self>, f: impl FnOnce(Arc<Plugins>) -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(queue) = self.queue.get() else {
            return;
        };
        let me = self.clone();
        // Counted until it has run, or until it is dropped unrun.
        let pending = Pending::new(self.clone());
        let _ = queue.send(Box::new(move || {
            Box::pin(async move {
                f(me).await;
                drop(pending);
            })
        }));
    }

    /// Resolves when every event and question queued so far has been
    /// handled (jobs aside). `vipd test` waits for it before it checks
    /// what plugins did.
    pub async fn settled(&self) {
        loop {
            let idle = self.queued.idle.notified();
            if self.queued.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Runs `f` on the Lua thread and waits for its answer, at most the
    /// time limit and a second: `None` when it did not answer.
    async fn ask<T, F>(
        self: &Arc<Self>,
        f: impl FnOnce(Arc<Plugins>) -> F + Send + 'static,
    ) -> Option<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Option<T>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.on_lua_thread(move |me| async move {
            let _ = tx.send(f(me).await);
        });
        let bound = self.settings.timeout + std::time::Duration::from_secs(1);
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::warn!("plugins did not answer within {bound:?}; going on without them");
                None
            }
        }
    }

    /// Delivers `ev` on the Lua thread: nothing waits for the plugins.
    pub fn notify(self: &Arc<Self>, ev: Event) {
        if !self.handlers.contains_key(&ev.kind) {
            return;
        }
        self.on_lua_thread(move |me| async move { me.deliver(&ev).await });
    }

    /// Asks the `before_recharge` handlers on the Lua thread (see
    /// [`Plugins::veto`]).
    pub(crate) async fn ask_veto(self: &Arc<Self>, ev: Event) -> Option<Veto> {
        if !self.handlers.contains_key(&ev.kind) {
            return None;
        }
        self.ask(move |me| async move { me.veto(&ev).await }).await
    }

    /// Asks the `parse_callback` handlers on the Lua thread (see
    /// [`Plugins::parse_callback`]).
    pub(crate) async fn ask_parse_callback(self: &Arc<Self>, ev: Event) -> Option<Mapped> {
        if !self.handlers.contains_key(&ev.kind) {
            return None;
        }
        self.ask(move |me| async move { me.parse_callback(&ev).await })
            .await
    }

    fn spawn_jobs(self: &Arc<Self>, tasks: &TaskTracker) {
        for (i, job) in self.jobs.iter().enumerate() {
            let me = self.clone();
            let stop = self.stop.clone();
            let (plugin, spec) = (job.plugin.clone(), job.spec.clone());
            tasks.spawn(async move {
                loop {
                    let now = me.host.now();
                    let Some(next) = me.jobs[i].schedule.next_after(now, me.timezone) else {
                        tracing::warn!(plugin = %plugin, schedule = spec, "job never runs again");
                        return;
                    };
                    let wait = std::time::Duration::from_secs((next - now).max(1) as u64);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    let what = format!("every {spec}");
                    me.call(&plugin, &what, &me.jobs[i].func, Value::Nil).await;
                }
            });
        }
    }

    /// Stops this generation: jobs end, queued work finishes, the Lua
    /// thread exits (a new generation took over, or the daemon stops).
    pub(crate) fn retire(&self) {
        self.stop.cancel();
        if self.queue.get().is_none() {
            self.finished.cancel();
        }
    }

    /// Waits until the Lua thread has finished (after [`Plugins::retire`]).
    pub async fn wait(&self) {
        self.finished.cancelled().await;
    }
}

/// One piece of queued work, counted in [`Plugins::settled`] while it
/// lives.
struct Pending(Arc<Plugins>);

impl Pending {
    fn new(plugins: Arc<Plugins>) -> Pending {
        plugins.queued.count.fetch_add(1, Ordering::SeqCst);
        Pending(plugins)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.queued.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.queued.idle.notify_waiters();
        }
    }
}

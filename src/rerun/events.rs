//! When to look for changes: the operating system's file events through `notify` and its
//! full debouncer (which keeps the kind of each event, so that a file merely opened is not a
//! change), polling where there are none, and Ctrl-C / SIGTERM, all on one channel.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use notify_debouncer_full::notify::{self, EventKind, PollWatcher, RecommendedWatcher};
use notify_debouncer_full::{
    new_debouncer, new_debouncer_opt, DebounceEventResult, Debouncer, NoCache, RecommendedCache,
};

use super::files::Watched;

/// How long a path must be quiet before its events are handed on (the debouncer's timeout).
/// An editor's save (write, rename, chmod) and a save-all of ten files take a few
/// milliseconds; watchexec's default is 50 ms too. Every millisecond here is added to the
/// time from a save to the job's first line (BENCHMARKS.md §14).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// After the first change, how long nothing else may change before the run starts: an editor
/// saving ten files, or a `git checkout`, is one re-run.
const QUIET: Duration = Duration::from_millis(50);
/// How often to poll when the file system gives no events.
const POLL: Duration = Duration::from_secs(1);

pub enum Message {
    Files(DebounceEventResult),
    Signal(i32),
}

enum Backend {
    Events(Debouncer<RecommendedWatcher, RecommendedCache>),
    Polling(Debouncer<PollWatcher, NoCache>),
}

/// The watcher, the signals, and the channel both report on.
pub struct Events {
    backend: Backend,
    pub receiver: Receiver<Message>,
    sender: Sender<Message>,
    watching: Vec<std::path::PathBuf>,
    /// Why events were given up for polling, if they were.
    fell_back: Option<String>,
    signals: signal_hook::iterator::Handle,
}

impl Events {
    /// Listens for signals at once and for file events (or polls, every `poll` when given).
    pub fn start(poll: Option<Duration>) -> anyhow::Result<Events> {
        let (sender, receiver) = channel();
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
        let handle = signals.handle();
        let to_loop = sender.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if to_loop.send(Message::Signal(signal)).is_err() {
                    break;
                }
            }
        });
        let backend = match poll {
            Some(every) => polling(&sender, every)?,
            None => match events(&sender) {
                Ok(backend) => backend,
                Err(_) => polling(&sender, POLL)?,
            },
        };
        Ok(Events {
            backend,
            receiver,
            sender,
            watching: Vec::new(),
            fell_back: None,
            signals: handle,
        })
    }

    /// Watches exactly the roots of `watched` (recursively). A root the file system cannot
    /// give events for (no inotify watches left) turns the whole watcher into polling.
    pub fn follow(&mut self, watched: &Watched) -> anyhow::Result<()> {
        let wanted: Vec<std::path::PathBuf> =
            watched.roots.iter().map(|r| r.path.clone()).collect();
        let gone: Vec<std::path::PathBuf> = (self.watching.iter())
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        for path in gone {
            let _ = self.unwatch(&path);
        }
        self.watching.retain(|p| wanted.contains(p));
        for path in wanted {
            if self.watching.contains(&path) {
                continue;
            }
            if let Err(e) = self.watch(&path) {
                if matches!(self.backend, Backend::Polling(_)) {
                    return Err(anyhow::anyhow!("watching {}: {e}", path.display()));
                }
                self.fell_back = Some(format!("{e}"));
                self.backend = polling(&self.sender, POLL)?;
                self.watching.clear();
                return self.follow(watched);
            }
            self.watching.push(path);
        }
        Ok(())
    }

    fn watch(&mut self, path: &Path) -> notify::Result<()> {
        let mode = notify::RecursiveMode::Recursive;
        match &mut self.backend {
            Backend::Events(d) => d.watch(path, mode),
            Backend::Polling(d) => d.watch(path, mode),
        }
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        match &mut self.backend {
            Backend::Events(d) => d.unwatch(path),
            Backend::Polling(d) => d.unwatch(path),
        }
    }

    /// How changes are seen, for the "watching" line.
    pub fn how(&self) -> String {
        match (&self.backend, &self.fell_back) {
            (Backend::Events(_), _) => "file events".to_owned(),
            (Backend::Polling(_), Some(why)) => {
                format!("polling every second: no file events ({why})")
            }
            (Backend::Polling(_), None) => "polling".to_owned(),
        }
    }

    /// Forgets file events that arrived while a run ran (the caller compares snapshots
    /// instead); a signal among them is returned.
    pub fn drain(&self) -> Option<i32> {
        while let Ok(message) = self.receiver.try_recv() {
            if let Message::Signal(signal) = message {
                return Some(signal);
            }
        }
        None
    }

    /// Waits for a change that counts in `watched`, then for a quiet period; `Err(signal)`
    /// when Ctrl-C or SIGTERM came first.
    pub fn wait(&self, watched: &Watched) -> Result<(), i32> {
        loop {
            match self.receiver.recv() {
                Ok(Message::Signal(signal)) => return Err(signal),
                Ok(Message::Files(Ok(events))) if counts(&events, watched) => break,
                Ok(Message::Files(_)) => {}
                // The senders live in `self`: never disconnected while we wait.
                Err(_) => return Err(libc::SIGTERM),
            }
        }
        loop {
            match self.receiver.recv_timeout(QUIET) {
                Ok(Message::Signal(signal)) => return Err(signal),
                Ok(Message::Files(_)) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => return Err(libc::SIGTERM),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.signals.close();
    }
}

/// Whether any event may be a change: not an access, and on a path that counts.
fn counts(events: &[notify_debouncer_full::DebouncedEvent], watched: &Watched) -> bool {
    events.iter().any(|event| {
        !matches!(event.kind, EventKind::Access(_))
            && event.paths.iter().any(|path| watched.counts(path))
    })
}

fn events(sender: &Sender<Message>) -> notify::Result<Backend> {
    let sender = sender.clone();
    let handler = move |result: DebounceEventResult| {
        let _ = sender.send(Message::Files(result));
    };
    Ok(Backend::Events(new_debouncer(DEBOUNCE, None, handler)?))
}

fn polling(sender: &Sender<Message>, every: Duration) -> notify::Result<Backend> {
    let sender = sender.clone();
    let handler = move |result: DebounceEventResult| {
        let _ = sender.send(Message::Files(result));
    };
    let config = notify::Config::default().with_poll_interval(every);
    Ok(Backend::Polling(new_debouncer_opt(
        DEBOUNCE, None, handler, NoCache, config,
    )?))
}

//! What the viewers of a release share, rendered once for all of them: its event
//! stream (each event becomes its server-sent event frame the first time any viewer
//! needs it, and every viewer is sent that same frame) and its live part (rendered once
//! per new event, or at most every [`LIVE_FRESH`] between events, for the viewers who
//! may act and once for those who may not).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use flotilla_proto::v1;

use super::pages;
use crate::node::Node;
use crate::server::release_view;

/// How many releases' frames, and how many live parts, are kept; the one read (or
/// made) least recently goes first.
const RELEASES_KEPT: usize = 8;

/// How long a live part is served while no event comes (hosts move between events).
pub(crate) const LIVE_FRESH: Duration = Duration::from_secs(1);

/// Stands for the viewer's form token in a shared live part; each viewer's copy has
/// their own token in its place (see [`LiveParts::get`]).
pub(crate) const FORM_TOKEN_SLOT: &str = "flotilla-form-token-slot";

/// The frames of the releases being watched (each a shared buffer: a viewer's copy is
/// a reference).
#[derive(Debug, Default)]
pub(crate) struct EventFrames {
    inner: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    releases: HashMap<String, Frames>,
    /// Counts reads, to find the release read least recently.
    reads: u64,
}

#[derive(Debug, Default)]
struct Frames {
    /// The frame of event `i + 1` at `i` (a release's events are numbered from 1 and
    /// only ever appended).
    frames: Vec<Bytes>,
    last_read: u64,
}

/// What one look at a release gives a stream.
#[derive(Debug)]
pub(crate) struct Look {
    /// The frames of the events after the one asked for, in order.
    pub frames: Vec<Bytes>,
    /// The index of the last of them (the one asked for when there are none).
    pub last: u64,
    /// Whether the release has finished (or been compacted): no event will follow.
    pub finished: bool,
}

impl EventFrames {
    /// The frames of release `id`'s events after index `after`, as `node` has applied
    /// them; `None` when the node has no such release. Events not yet rendered are
    /// rendered here, once, outside the state's lock.
    pub(crate) fn after(&self, node: &Node, id: &str, after: u64) -> Option<Look> {
        let mut kept = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let have = kept.releases.get(id).map_or(0, |f| f.frames.len());
        // Copies of the events this cache lacks, taken under the state's read lock;
        // `None` inside for a release compacted away (its events are gone).
        let read = node.read_local(|s| {
            if let Some(r) = s.release(id) {
                // More frames than events: this node's state went back (it restored a
                // snapshot), so every frame is made again.
                let from = if have > r.run.events.len() { 0 } else { have };
                let fresh: Vec<v1::ReleaseEvent> =
                    r.run.events[from..].iter().map(|ev| release_view::event(id, ev)).collect();
                return Some(Some((from, fresh, r.run.is_finished())));
            }
            s.compacted(id).map(|_| None)
        })?;
        let Some((from, fresh, finished)) = read else {
            kept.releases.remove(id);
            return Some(Look { frames: Vec::new(), last: after, finished: true });
        };
        kept.reads += 1;
        let now = kept.reads;
        if !kept.releases.contains_key(id) && kept.releases.len() >= RELEASES_KEPT {
            let oldest = kept.releases.iter().min_by_key(|(_, f)| f.last_read).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                kept.releases.remove(&oldest);
            }
        }
        let entry = kept.releases.entry(id.to_owned()).or_default();
        entry.frames.truncate(from);
        entry.frames.extend(fresh.iter().map(|ev| Bytes::from(frame(ev))));
        entry.last_read = now;
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(entry.frames.len());
        let frames = entry.frames[start..].to_vec();
        let last = after.max(u64::try_from(entry.frames.len()).unwrap_or(u64::MAX));
        Some(Look { frames, last, finished })
    }
}

/// An event as the browser receives it: its index as the event id (what a reconnecting
/// browser sends back as `Last-Event-ID`), and its text and rendered line as JSON.
pub(crate) fn frame(e: &v1::ReleaseEvent) -> String {
    let data = serde_json::json!({
        "index": e.index,
        "at_unix_ms": e.at_unix_ms,
        "message": e.message,
        "html": pages::event(e).into_string(),
    });
    format!("id: {}\nevent: release\ndata: {data}\n\n", e.index)
}

/// The live parts of the releases being watched, per release and kind of viewer (who
/// may act, who may not).
#[derive(Debug, Default)]
pub(crate) struct LiveParts {
    inner: Mutex<HashMap<(String, bool), LivePart>>,
}

#[derive(Debug)]
struct LivePart {
    /// How many events the release had when it was made.
    events: u64,
    made: Instant,
    /// Rendered with [`FORM_TOKEN_SLOT`] for the form tokens.
    html: String,
}

impl LiveParts {
    /// Release `id`'s live part as made for the viewers `may_act` says, with
    /// `form_token` in its forms, when one was made since its `events`-th event and
    /// less than [`LIVE_FRESH`] ago.
    pub(crate) fn get(&self, id: &str, may_act: bool, events: u64, form_token: &str) -> Option<String> {
        let parts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let part = parts.get(&(id.to_owned(), may_act))?;
        (part.events == events && part.made.elapsed() < LIVE_FRESH).then(|| fill(&part.html, may_act, form_token))
    }

    /// Keeps `html`, the live part of release `id` at its `events`-th event rendered
    /// with [`FORM_TOKEN_SLOT`] for the form tokens; answers it with `form_token` in
    /// its forms.
    pub(crate) fn put(&self, id: &str, may_act: bool, events: u64, html: String, form_token: &str) -> String {
        let filled = fill(&html, may_act, form_token);
        let mut parts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (id.to_owned(), may_act);
        if !parts.contains_key(&key) && parts.len() >= RELEASES_KEPT {
            let oldest = parts.iter().min_by_key(|(_, p)| p.made).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                parts.remove(&oldest);
            }
        }
        parts.insert(key, LivePart { events, made: Instant::now(), html });
        filled
    }
}

/// A shared live part with the viewer's form token in its forms.
fn fill(html: &str, may_act: bool, form_token: &str) -> String {
    if may_act { html.replace(FORM_TOKEN_SLOT, form_token) } else { html.to_owned() }
}

//! Steering received frames to the rx queue the frontend's hash settings choose.
//!
//! A multi-queue tap hands each frame to a queue of the kernel's choosing. With hashing on
//! (set through the control ring), a queue thread that reads a frame meant for another
//! queue hands it over: into that queue's inbox (bounded; a full inbox drops the frame,
//! as a full device queue does), with a wake-up the other thread sleeps on.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::hash::{FrameHash, HashConfig};
use crate::wake::Waker;
use crate::wire::Offload;

/// Frames an inbox holds before it drops more.
const INBOX: usize = 512;

/// A frame handed from one queue to another.
#[derive(Debug)]
pub(crate) struct Steered {
    pub(crate) off: Offload,
    pub(crate) hash: FrameHash,
    pub(crate) data: Vec<u8>,
}

#[derive(Debug)]
struct Inbox {
    frames: Mutex<VecDeque<Steered>>,
    wake: Waker,
}

/// A vif's hash settings and its queues' inboxes.
#[derive(Debug)]
pub struct Steer {
    /// The hash settings (written by the control ring).
    pub hash: Arc<RwLock<HashConfig>>,
    inboxes: Vec<Inbox>,
}

impl Steer {
    /// For `queues` queues, with hashing off.
    pub fn new(queues: usize) -> std::io::Result<Steer> {
        let inboxes = (0..queues)
            .map(|_| {
                Ok(Inbox {
                    frames: Mutex::new(VecDeque::new()),
                    wake: Waker::new()?,
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Steer {
            hash: Arc::default(),
            inboxes,
        })
    }

    /// Queues.
    pub fn queues(&self) -> usize {
        self.inboxes.len()
    }

    /// Hands `f` to queue `q`; false (dropped) when its inbox is full.
    pub(crate) fn give(&self, q: usize, f: Steered) -> bool {
        let inbox = &self.inboxes[q];
        let mut g = inbox.frames.lock();
        if g.len() >= INBOX {
            return false;
        }
        g.push_back(f);
        drop(g);
        inbox.wake.wake();
        true
    }

    /// The next frame handed to queue `q`.
    pub(crate) fn take(&self, q: usize) -> Option<Steered> {
        let inbox = &self.inboxes[q];
        let mut g = inbox.frames.lock();
        let f = g.pop_front();
        if g.is_empty() {
            inbox.wake.take();
        }
        f
    }

    /// What queue `q`'s thread sleeps on for handed frames.
    pub(crate) fn waker(&self, q: usize) -> &Waker {
        &self.inboxes[q].wake
    }
}
